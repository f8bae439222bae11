"""One data-parallel rank's epoch over a staged version, in a fresh process so its peak RSS is its own
(test_stream_s3). argv: state_dir data_spec stream(true|false) max_steps(0 = the whole epoch).
Prints JSON: peak RSS since the imports (Linux VmHWM, reset through /proc/self/clear_refs), steps,
and the shards (and their bytes) this rank fetched for its epoch, apart from those of samples."""

import json
import re
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from conftest import tiny_config  # noqa: E402
from simsiam.engine import train  # noqa: E402
from simsiam.storage.sources import open_sources  # noqa: E402


def main(state: str, spec: str, stream: str, max_steps: int) -> None:
    torch.set_num_threads(1)
    cfg = tiny_config(f"data.source={spec}", f"data.stream={stream}", "data.train_subset=null",
                      "data.shuffle_buffer=500", "train.epochs=1", "train.batch_size=128", "model.in_channels=3",
                      "data.recipe=cifar", "data.image_size=16", "tracking.system_metrics=false",
                      *([f"train.max_steps={max_steps}"] if max_steps else []))
    Path("/proc/self/clear_refs").write_text("5")  # peak RSS from here on: the data, not the imports
    source, _ = open_sources(cfg, need_test=False, state=state)
    result = train(cfg, train_source=source, rank=0, world_size=2)  # rank 0 of 2, no peer needed for data
    reads = getattr(source, "reads", [])
    peak_kb = int(re.search(r"VmHWM:\s+(\d+) kB", Path("/proc/self/status").read_text()).group(1))
    print(json.dumps({"peak_rss_mb": peak_kb / 1024,
                      "steps": result.step, "bytes_read": sum(b for _, b, p in reads if p.startswith("train")),
                      "shards_read": sum(p.startswith("train") for _, _, p in reads),  # the epoch's reads
                      "sample_reads": sum(p == "sample" for _, _, p in reads)}))  # the label-free sample's


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]))
