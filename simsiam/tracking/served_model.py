"""The registered model's pyfunc, logged as MLflow "model from code": MLflow stores this file, not
a pickle. It takes images as float32 in [0, 1] (N x C x H x W, C = the dataset's channels),
normalises them as in training and returns the features (N x D)."""

import mlflow
import numpy as np
import torch
from mlflow.pyfunc import PythonModel


class SimSiamFeatures(PythonModel):
    def load_context(self, context):
        from simsiam.tracking.net_files import read_net_files

        self.net, info = read_net_files(context.artifacts["weights"], context.artifacts["net"])
        self.dataset = info["config"]["data"]["dataset"]
        self.channels = info["config"]["model"]["in_channels"]

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from simsiam.batch_augment import normalise

        x = torch.as_tensor(np.asarray(model_input, dtype=np.float32))
        with torch.no_grad():
            return self.net(normalise(x, self.dataset, self.channels)).numpy()


mlflow.models.set_model(SimSiamFeatures())
