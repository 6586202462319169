"""MLflow for `train` and `evaluate`: one store per repository, one run per pipeline version, the model as pyfunc."""
