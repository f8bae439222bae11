"""`simsiam embed`'s features per second against a plain torch forward of the same backbone, and the
registered pyfunc's ONNX graph on onnxruntime, on the same images and threads. The embed path is
`simsiam.evaluation.features_for` (what `simsiam embed` runs per batch: index the source, the eval
transform, the forward); the plain loop only runs `backbone(normalised batch)` on tensors prepared
beforehand. An untrained backbone: the cost does not depend on the weights. Prints JSON.

    python bench/embed_throughput.py                    # cpu-demo, 10,000 Fashion-MNIST test images, 2 threads
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from simsiam.batch_augment import normalise  # noqa: E402
from simsiam.config import load_config  # noqa: E402
from simsiam.data import load_source  # noqa: E402
from simsiam.evaluation import features_for  # noqa: E402
from simsiam.models import build_model  # noqa: E402
from simsiam.tracking.onnx_export import export_onnx  # noqa: E402


def _best_of(repeats: int, run) -> float:
    """The fastest of `repeats` timed runs (seconds): the least disturbed by the rest of the machine."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="cpu-demo")
    ap.add_argument("--images", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--set", action="append", default=[], help="config override key=value")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    cfg = load_config(args.preset, [*args.set, "train.device=cpu"])
    source = load_source(cfg.data, "test")
    idx = torch.arange(min(args.images, len(source)))
    net = build_model(cfg.model).backbone.eval()
    batch = cfg.eval.feature_batch_size
    images = torch.stack([source[int(i)][0] for i in idx]).float().div(255) if source[0][0].dtype == torch.uint8 \
        else torch.stack([source[int(i)][0] for i in idx])
    chunks = [images[i:i + batch] for i in range(0, len(images), batch)]

    def plain():
        with torch.no_grad():
            for x in chunks:
                net(normalise(x, cfg.data.norm, cfg.model.in_channels))

    features_for(net, cfg, source, idx[:batch])  # warm-up: kernels' set-up
    embed_s = _best_of(args.repeats, lambda: features_for(net, cfg, source, idx))
    plain_s = _best_of(args.repeats, plain)
    with tempfile.TemporaryDirectory() as tmp:
        import onnxruntime as ort

        path = Path(tmp) / "backbone.onnx"
        export_onnx(net, cfg.data.norm, cfg.model.in_channels, cfg.data.image_size, path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        arrays = [np.ascontiguousarray(x.numpy()) for x in chunks]
        onnx_s = _best_of(args.repeats, lambda: [session.run(None, {"images": a}) for a in arrays])
    n = len(idx)
    print(json.dumps({"preset": args.preset, "images": n, "threads": args.threads, "batch": batch,
                      "embed_img_s": round(n / embed_s, 1), "plain_torch_img_s": round(n / plain_s, 1),
                      "ratio_embed_to_plain": round(plain_s / embed_s, 3),
                      "onnxruntime_img_s": round(n / onnx_s, 1)}, indent=2))


if __name__ == "__main__":
    main()
