"""The registered model's pyfunc, logged as MLflow "model from code": MLflow stores this file, not
a pickle. It takes images as float32 in [0, 1] (N x C x H x W, C = the model's `model.in_channels`),
normalises them as in training and returns the features (N x D). Other input gets a one-line
error (`simsiam.image_input`); the model's signature has no input schema for that reason: MLflow's
own schema check would answer first, with the whole array in its message."""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class SimSiamFeatures(PythonModel):
    def load_context(self, context):
        from simsiam.config import validate_config
        from simsiam.tracking.net_files import read_net_files

        self.net, info = read_net_files(context.artifacts["weights"], context.artifacts["net"])
        self.dataset = validate_config(info["config"]).data.norm  # the input statistics it was trained with
        self.channels = info["config"]["model"]["in_channels"]

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        from simsiam.batch_augment import normalise
        from simsiam.image_input import ImageInputError, check_images

        try:
            x = torch.as_tensor(check_images(model_input, self.channels))
        except ImageInputError as exc:  # the serving endpoint answers 400 with this line
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        with torch.no_grad():
            return self.net(normalise(x, self.dataset, self.channels)).numpy()


mlflow.models.set_model(SimSiamFeatures())
