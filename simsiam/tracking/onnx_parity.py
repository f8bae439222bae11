"""The ONNX parity check's record: a logged model's tag, copied onto its registered version. Apart from
`onnx_export` so that the registry reads it without importing torch."""

from __future__ import annotations

from mlflow import MlflowClient

ONNX_PARITY = "onnx.max_abs_diff"


def onnx_parity(tracking_uri: str, model_uri: str) -> dict[str, str]:
    """{ONNX_PARITY: value} of a logged model (`models:/<model id>`); {} for one logged without ONNX."""
    if not model_uri.startswith("models:/m-"):
        return {}
    model = MlflowClient(tracking_uri).get_logged_model(model_uri.removeprefix("models:/"))
    return {ONNX_PARITY: model.tags[ONNX_PARITY]} if ONNX_PARITY in model.tags else {}
