"""The `dlma` command: one sub-command per pipeline stage.

Normally run through DVC (`dvc repro`), which passes the paths from dvc.yaml. Each
sub-command is the same function that `python -m stages.<name>` runs.
"""

from __future__ import annotations

import typer

from dlma.compare import command as compare_command
from dlma.export import command as export_command
from dlma.rounds import command as rounds_study_command
from stages import (
    agreement,
    base_answers,
    evaluate,
    generate,
    human,
    model,
    prepare,
    recover,
    reward,
    round_plan,
    rounds_report,
    score,
    sets,
    sources,
    train,
    truth,
)
from stages import filter as filter_stage
from stages import round as round_stage

app = typer.Typer(
    help=(
        "DLMA: align a language model without human labels. The pipeline is "
        "model, sources -> prepare -> generate -> score -> filter -> train -> evaluate (with base_answers: the base model's answers, sets, human -> reward for the "
        "reward-model judge, agreement: every labeller against human labels, and truth: every labeller against the "
        "true reward of a controlled objective; round_plan -> round -> rounds_report: iterative rounds, rounds.count); run it all with `dvc repro`, "
        "or one stage at a time with these commands (paths as in dvc.yaml)."
    ),
    no_args_is_help=True,
    add_completion=False,
)
app.command("model")(model.main)
app.command("sources")(sources.main)
app.command("prepare")(prepare.main)
app.command("generate")(generate.main)
app.command("score")(score.main)
app.command("filter")(filter_stage.main)
app.command("sets")(sets.main)
app.command("recover")(recover.main)
app.command("train")(train.main)
app.command("agreement")(agreement.main)
app.command("truth")(truth.main)
app.command("base_answers")(base_answers.main)
app.command("evaluate")(evaluate.main)
app.command("human")(human.main)
app.command("reward")(reward.main)
app.command("round_plan")(round_plan.main)
app.command("round")(round_stage.main)
app.command("rounds_report")(rounds_report.main)
app.command("compare")(compare_command.main)
app.command("rounds-study")(rounds_study_command.main)
app.command("export")(export_command.main)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
