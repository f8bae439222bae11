"""The registered model's pyfunc, logged as MLflow "model from code": MLflow stores this file, not a
pickle, and it runs the version's ONNX graph (`onnx_export.py`) on onnxruntime, so loading imports
neither torch nor our package: only this file and the input check shipped beside it
(`image_input.py`). It takes float32 images in [0, 1] (N x C x H x W as trained; float64 is cast) and
returns the features (N x D). Other input gets a one-line error; the signature has no input schema
for that reason: MLflow's own check would answer first, with the whole array in its message."""

import json

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class SimSiamFeatures(PythonModel):
    def load_context(self, context):
        import onnxruntime as ort

        with open(context.artifacts["net"]) as fh:
            self.input = json.load(fh)["input"]
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only
        self.session = ort.InferenceSession(context.artifacts["onnx"], options, providers=["CPUExecutionProvider"])

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        from image_input import ImageInputError, check_images  # shipped with the model (code_paths)
        from mlflow.exceptions import MlflowException
        from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

        try:
            x = check_images(model_input, self.input["channels"], self.input.get("size"))
        except ImageInputError as exc:  # the serving endpoint answers 400 with this line
            raise MlflowException(str(exc), error_code=INVALID_PARAMETER_VALUE) from None
        return self.session.run(None, {"images": x})[0]


mlflow.models.set_model(SimSiamFeatures())
