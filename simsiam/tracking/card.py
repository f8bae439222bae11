"""The model card: the markdown description of a registered version, built from its run (metrics,
data, config hash, link) so a consumer can judge, load and serve it without reading our code."""

from __future__ import annotations

from mlflow import MlflowClient

from simsiam import metrics as M
from simsiam.redact import redact
from simsiam.tracking.runs import run_url

CARD_METRICS = (M.KNN_FINAL, M.PROBE, M.Z_STD_RATIO, *M.LABEL_FREE)


def model_card(tracking_uri: str, run_id: str, name: str, version: str, decision: str, reasons: list[str]) -> str:
    run = MlflowClient(tracking_uri).get_run(run_id)
    metrics, tags, params = run.data.metrics, run.data.tags, run.data.params
    channels = params.get("model.in_channels", "C")  # what the served model checks
    rows = "\n".join(M.table({key: metrics.get(key) for key in CARD_METRICS if key in metrics}))
    measured = [f"probe on {tags['eval.set']}" if tags.get("eval.set") else "no probe (no labelled data)",
                f"label-free metrics on {tags['label_free.set']}" if tags.get("label_free.set") else None]
    return f"""**Gate: {decision}.** {'; '.join(reasons)}

{rows}

**Measured on:** {'; '.join(m for m in measured if m)}. The gate judges by the probe where labelled \
data exists, else by the label-free metric `eval.label_free_judge` (`label_free/std_ratio` by default: \
the spread of the normalised features, 0 when collapsed; it ranked encoders as the probe did, RankMe did not).

**Data:** `{tags.get('dataset.name', params.get('data.dataset', '-'))}` version `{tags.get('dataset.version', '-')}`, \
manifest `{tags.get('dataset.manifest_uri', '-')}`.
**Training:** config hash `{tags.get('simsiam.config_hash', '-')}`, backbone `{params.get('model.backbone', '-')}`, \
run [{run_id}]({run_url(tracking_uri, run_id)}).

**Input:** float32 images in [0, 1], shape N x {channels} x H x W ({params.get('data.image_size', '?')} x \
{params.get('data.image_size', '?')} in training). The model normalises them itself and refuses other input \
(integer or 0-255 pixels, values outside [0, 1], another shape) with a one-line error. **Output:** features, N x D.

**Load:**
```python
import mlflow
mlflow.set_tracking_uri("{redact(tracking_uri)}")  # or export MLFLOW_TRACKING_URI
model = mlflow.pyfunc.load_model("models:/{name}/{version}")  # or models:/{name}@champion
features = model.predict(images)  # numpy float32, N x {channels} x H x W, values in [0, 1]
```
As a torch module, rebuilt from the plain weight files (no pickle):
`from simsiam.tracking import load_registered; net = load_registered("models:/{name}/{version}")`.

**Serve:**
```bash
mlflow models serve -m models:/{name}@champion --env-manager local -p 5001
curl -s localhost:5001/invocations -H 'Content-Type: application/json' -d '{{"inputs": [[[[0.5, ...]]]]}}'
```
"""
