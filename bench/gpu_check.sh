#!/usr/bin/env bash
# One GPU check, about 6-8 minutes on one H200, printing one JSON document (also $OUT/gpu_check.json):
#   step:      train-step img/s, fashion-mnist preset, fp32 / bf16 / channels_last / both / compile
#   e2e:       end-to-end img/s on the lightly shape, data.augment_on=workers vs device, and lightly 1.6
#   quality:   the fashion-mnist preset for GPU_CHECK_EPOCHS epochs (default 15): minutes, kNN curve, probe
#   gpu_util:  nvidia-smi utilisation (%) sampled every 0.5 s during each phase; peak memory per variant
# Before the session, here: `bash bench/gpu_prepare.sh`; then device run with carry [".whl", ".gpu-data"]
# and the command `bash bench/gpu_check.sh`.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-/tmp/gpu-check}
mkdir -p "$out"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 SIMSIAM_CACHE=/tmp/simsiam-cache
mkdir -p "$SIMSIAM_CACHE/fashion-mnist"
[ -d .gpu-data ] && cp .gpu-data/*-ubyte* "$SIMSIAM_CACHE/fashion-mnist/"
py=${PYTHON:-python3}
extra=${GPU_CHECK_EXTRA:-}  # e.g. a CPU dry run: "--set model.width=4 --set train.batch_size=32 --steps 2"
nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits -lms 500 > "$out/util.csv" 2>/dev/null &
smi=$!
marks="$out/marks.txt"; : > "$marks"
phase() {  # name, limit_s, command...: run one phase, note where its utilisation samples start and end
  local name=$1 limit=$2; shift 2
  echo "$name $(wc -l < "$out/util.csv")" >> "$marks"
  timeout "$limit" "$@" > "$out/$name.json" 2> "$out/$name.err" || echo "{\"error\": \"$name exited $?\"}" > "$out/$name.json"
  echo "end $(wc -l < "$out/util.csv")" >> "$marks"
}
phase step 120 $py bench/throughput.py --preset fashion-mnist --steps 30 --warmup 5 \
  --variants base,bf16,channels_last,channels_last+bf16,compile --set data.augment_on=device $extra
phase e2e 150 $py bench/throughput.py --preset fashion-mnist --shape lightly --end-to-end --lightly \
  --steps 40 --warmup 5 --set data.num_workers=8 --set train.amp=bf16 --set train.channels_last=true $extra
phase quality 240 $py bench/quality.py --preset fashion-mnist --set train.epochs="${GPU_CHECK_EPOCHS:-15}" \
  --set eval.knn_every_epochs=5 --set eval.probe_epochs=30 ${GPU_CHECK_QUALITY_EXTRA:-}
kill $smi 2>/dev/null
$py - "$out" <<'PY'
import json, statistics, sys
from pathlib import Path
out = Path(sys.argv[1])
util = [int(l.split(",")[0]) for l in (out / "util.csv").read_text().splitlines() if l.split(",")[0].strip().isdigit()]
marks = [l.split() for l in (out / "marks.txt").read_text().splitlines()]
result = {}
for (name, a), (_, b) in zip(marks[::2], marks[1::2]):
    try:
        result[name] = json.loads((out / f"{name}.json").read_text())
    except json.JSONDecodeError:
        result[name] = {"error": (out / f"{name}.err").read_text()[-800:]}
    s = util[int(a):int(b)]
    result.setdefault("gpu_util", {})[name] = ({"mean": round(statistics.mean(s), 1), "p50": statistics.median(s),
                                                "samples": len(s)} if s else None)
(out / "gpu_check.json").write_text(json.dumps(result, indent=2))
print(json.dumps(result, indent=2))
PY
