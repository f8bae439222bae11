"""What each pipeline step returns: one type per step, whichever way it ran (in this process, on
Ray Train workers, or as a sweep's best trial). Metric values are under the keys of
`simsiam.metrics`; `to_dict()` is the JSON the CLI prints and the flows return."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import Any


class _Result:
    _private: tuple[str, ...] = ()  # in-memory handles, never serialized

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in fields(self) if f.name not in self._private}


def _plain(value):
    return value.to_dict() if isinstance(value, _Result) else asdict(value) if hasattr(value, "__dataclass_fields__") \
        else value


@dataclass
class Staged(_Result):
    """One split, or an image collection, staged as a content-addressed version (`cached`: it was
    already complete). A collection's files that are not readable images are `skipped` (the first
    few named), and its staging keeps the shards of the version before it that did not change."""

    uri: str
    manifest: str
    name: str
    version: str
    split: str
    samples: int
    shards: int
    bytes: int
    uploaded_objects: int
    cached: bool
    labelled: bool = True
    uploaded_bytes: int | None = None
    reused_shards: int = 0
    skipped: int = 0
    skipped_first: list[str] = field(default_factory=list)

    @property
    def spec(self) -> str:
        return f"{self.name}@{self.version}"

    @classmethod
    def of(cls, manifest: dict, manifest_uri: str, uploaded_objects: int, **staging) -> "Staged":
        """A staged version as its manifest describes it; `staging`: what the staging did, besides."""
        skipped = manifest.get("skipped", {"count": 0, "first": []})
        return cls(uri=manifest_uri.rsplit("/", 1)[0], manifest=manifest_uri, name=manifest["name"],
                   version=manifest["version"], split=manifest["split"], samples=manifest["num_samples"],
                   shards=len(manifest["shards"]), bytes=manifest["total_bytes"], uploaded_objects=uploaded_objects,
                   cached=uploaded_objects == 0, labelled=manifest.get("labels", True), skipped=skipped["count"],
                   skipped_first=skipped["first"], **staging)


@dataclass
class TrainedRun(_Result):
    """A trained encoder. `checkpoint` is a local path or `s3://<bucket>/<key>/checkpoint.pt`;
    `metrics` are the training's last values (loss, collapse ratio, kNN monitor); `where` says how
    it ran (`ray_run` and `workers`, or `sweep` and `trial`)."""

    checkpoint: str
    collapsed: bool
    run_id: str | None = None
    run_url: str | None = None
    steps: int | None = None
    epochs: int | None = None
    resumed_from_step: int | None = None
    wall_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    where: dict[str, Any] = field(default_factory=dict)


@dataclass
class SweepResult(_Result):
    """A sweep: one row per trial (grid values, metrics under their keys, why it stopped), the best
    healthy trial as a `TrainedRun` (None when every trial collapsed or failed)."""

    name: str
    rows: list[dict[str, Any]]
    parent_run_id: str | None = None
    best: TrainedRun | None = None
    checkpoints: str | None = None  # where the trials' checkpoints are, with <trial> for a trial's id
    curves: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # run name -> epoch-end metrics
    metric: str = "knn/top1"  # what ranked the trials (ASHA and `best`)
    resumed: bool = False  # an interrupted sweep, restored: its finished trials kept, the others continued
    _private = ("curves",)


@dataclass
class Evaluation(_Result):
    """The evaluation after training: the label-free metrics on their fixed sample of training images
    (`label_free_set`), and with labelled data the kNN and the linear probe on the full test split
    (`eval_set`; None without labelled data). The gate compares only numbers measured on the same set.
    `model` and `model_config`: the trained network as read from its checkpoint, for registration
    (not serialized)."""

    metrics: dict[str, float]
    eval_set: dict[str, str] | None
    train_images: int | None
    test_images: int | None
    eval_s: float
    label_free_set: dict[str, str] = field(default_factory=dict)
    checkpoint: str | None = None
    model_uri: str | None = None
    step: int | None = None
    random_init: bool = False
    model: Any = field(default=None, repr=False, compare=False)
    model_config: Any = field(default=None, repr=False, compare=False)
    _private = ("model", "model_config")


def outcome(trained: TrainedRun, evaluation: Evaluation | None) -> dict[str, Any]:
    """What a run reports at its end: the training's and the evaluation's metrics under their keys,
    what the probe measured on (None when no labelled data judged the encoder) and the label-free sample."""
    return {"metrics": {**trained.metrics, **(evaluation.metrics if evaluation else {})},
            "eval_set": evaluation.eval_set["eval.set"] if evaluation and evaluation.eval_set else None,
            "label_free_set": evaluation.label_free_set.get("label_free.set") if evaluation else None}


@dataclass
class Registration(_Result):
    """A registered version and the gate's decision (`champion` or `challenger`), with its reasons."""

    name: str
    version: str
    decision: str
    reasons: str
    noop: bool = False  # already gated by an earlier attempt
    model_uri: str | None = None  # the logged backbone
    alias_uri: str | None = None  # models:/<name>@<decision>
    url: str | None = None  # the version's page in the MLflow UI


@dataclass
class Embeddings(_Result):
    """A staged version's features under one registered version, as Parquet in the store."""

    uri: str
    model_uri: str
    data: dict[str, str]
    num_rows: int
    dim: int
    part: str
    reused: bool


@dataclass
class Reproduction(_Result):
    """The paper's claims judged on our trials: reproduce.md, reproduce.json and the Fig. 2 figure."""

    report_md: str
    report_json: str
    figure: str | None
    wall_s: float
    verdicts: dict[str, int]
    rows: list[dict[str, Any]]
    mlflow_parent_run: str | None = None
