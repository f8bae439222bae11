"""A logged network as ONNX, beside its pyfunc: float32 images in [0, 1] in (the normalisation is part
of the graph), features out. Checked against torch on a fixed batch when it is written: a graph whose
outputs differ by more than `PARITY_TOLERANCE` is not logged."""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import torch

from simsiam.batch_augment import normalise
from simsiam.errors import TrackingError

PARITY_TOLERANCE = 1e-4
INPUT, OUTPUT = "images", "features"


class ImagesToFeatures(torch.nn.Module):
    """The network behind its input normalisation: what the pyfunc and the ONNX graph compute."""

    def __init__(self, net: torch.nn.Module, norm: str, channels: int) -> None:
        super().__init__()
        self.net, self.norm, self.channels = net, norm, channels

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(normalise(images, self.norm, self.channels))


def fixed_batch(channels: int, size: int, n: int = 8) -> torch.Tensor:
    """The parity check's images: the same for every version of a model."""
    return torch.rand(n, channels, size, size, generator=torch.Generator().manual_seed(0))


def export_onnx(net: torch.nn.Module, norm: str, channels: int, size: int, path: Path) -> float:
    """Write `net` (eval mode, CPU, float32) as ONNX with a dynamic batch; return the largest absolute
    difference between onnxruntime's features and torch's on `fixed_batch`."""
    model = ImagesToFeatures(net, norm, channels).eval()
    # the TorchScript-based exporter: several times faster than the dynamo one on these small convnets
    # (every logged model pays it), and it prints nothing on stdout, where our commands print JSON
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (fixed_batch(channels, size, 2),), str(path), input_names=[INPUT],
                          output_names=[OUTPUT], dynamic_axes={INPUT: {0: "n"}, OUTPUT: {0: "n"}},
                          opset_version=17, dynamo=False)
    batch = fixed_batch(channels, size)
    with torch.no_grad():
        expected = model(batch).numpy()
    diff = float(np.abs(run_onnx(path, batch.numpy()) - expected).max())
    if not diff <= PARITY_TOLERANCE:
        raise TrackingError(f"the ONNX export of {path.name} differs from torch by {diff:.3g} (> {PARITY_TOLERANCE})")
    return diff


def run_onnx(path: Path, images: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {INPUT: images})[0]
