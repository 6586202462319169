from dlma.cli import main

main()
