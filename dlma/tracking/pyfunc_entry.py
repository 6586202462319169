"""The file MLflow logs as the aligned model's code (models-from-code): loading the model
runs this file, which names the model object; no pickle is written or read."""

import mlflow.models

from dlma.tracking.pyfunc import AlignedModel

mlflow.models.set_model(AlignedModel())
