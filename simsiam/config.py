"""One config tree for every knob, loaded from YAML presets plus dotted overrides.

`load_config("cpu-demo", ["optim.base_lr=0.05"])` -> validated `Config`.
Every section forbids unknown keys so a typo is an error, not a silent default.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, Sequence

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simsiam.errors import ConfigError

PRESETS_DIR = Path(__file__).resolve().parent.parent / "configs"

Backbone = Literal["resnet18", "resnet50", "resnet18_cifar"]
DatasetName = Literal["fashion-mnist", "cifar10", "imagefolder", "images"]
LabelledName = Literal["fashion-mnist", "cifar10", "imagefolder"]
LabelFreeKey = Literal["label_free/rankme", "label_free/alignment", "label_free/uniformity", "label_free/std_ratio"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """Encoder f = backbone + projector, predictor h (paper Sec. 3, official builder.py)."""

    backbone: Backbone = "resnet18_cifar"
    width: int = Field(64, ge=4, description="ResNet base width; 64 is torchvision's, smaller is a thin CPU net")
    in_channels: Literal[1, 3] = Field(3, description="input channels the backbone expects "
                                                      "(grey data is repeated to 3)")
    proj_layers: Literal[2, 3] = Field(3, description="3 for ImageNet, 2 for CIFAR-size images (App. D)")
    proj_hidden: int | None = Field(None, ge=1, description="projector hidden dim; default d (paper: 2048)")
    dim: int = Field(2048, ge=2, description="projection/prediction output dim d")
    pred_dim: int | None = Field(None, ge=1, description="predictor hidden dim; default d/4")
    predictor: Literal["mlp", "none", "fixed_random"] = "mlp"
    bn: Literal["none", "hidden", "default", "all"] = Field(
        "default", description="BN in the MLP heads (Table 4): none / hidden only / +proj output / +pred output"
    )
    zero_init_residual: bool = True
    head_conv: int | None = Field(None, ge=1, description="end the backbone with a 1x1 conv + BN + ReLU to this "
                                                           "many channels before pooling (the feature dim)")
    sync_bn: bool = False

    @property
    def proj_hidden_dim(self) -> int:
        return self.proj_hidden if self.proj_hidden is not None else self.dim

    @property
    def pred_hidden(self) -> int:
        return self.pred_dim if self.pred_dim is not None else max(1, self.dim // 4)


class LossConfig(_Section):
    """D(p, stopgrad(z)) and the paper's variants; `target` switches to the Sec. 5 (EM) modes."""

    stop_grad: bool = True
    similarity: Literal["cosine", "cross_entropy"] = "cosine"
    symmetry: Literal["symmetric", "asymmetric", "asymmetric_2x"] = "symmetric"
    target: Literal["online", "snapshot", "moving_average"] = Field(
        "online", description="what p is pulled toward: online = z of the same step (SimSiam); snapshot = z from "
                              "a frozen encoder copy refreshed every loss.snapshot_every_steps (k-step "
                              "alternation); moving_average = a per-image memory eta of z (loss.ma_momentum)")
    snapshot_every_steps: int = Field(1, ge=1, description="k for loss.target=snapshot: optimizer steps between "
                                                           "refreshes of the frozen encoder")
    ma_momentum: float = Field(0.8, ge=0, lt=1, description="m for loss.target=moving_average: "
                                                            "eta_x <- m * eta_x + (1 - m) * z(T'(x))")


class OptimConfig(_Section):
    """SGD recipe: lr = base_lr * batch / 256, cosine decay, predictor lr optionally fixed."""

    base_lr: float = Field(0.05, gt=0)
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(1e-4, ge=0)
    fix_pred_lr: bool = True
    warmup_epochs: float = Field(0.0, ge=0)


class DataConfig(_Section):
    """What the encoder trains on: a labelled dataset (its labels only evaluate), or `images`, an
    unlabelled collection at `root`: a folder (flat or nested) or an S3 prefix (s3://bucket/prefix/)."""

    dataset: DatasetName = "fashion-mnist"
    root: str | None = Field(None, description="directory with the dataset files (None = standard places); for "
                                               "dataset images: a folder or s3://<bucket>/<prefix>/")
    download: bool = Field(True, description="fetch the dataset when no local copy exists and the network allows")
    train_subset: int | None = Field(None, ge=2, description="use the first N training images (seeded shuffle)")
    image_size: int = Field(28, ge=8, description="crop size fed to the network")
    recipe: Literal["grey", "cifar", "imagenet"] = "grey"
    crop_min_scale: float = Field(0.2, gt=0, le=1)
    num_workers: int = Field(0, ge=0, description="DataLoader workers for data.augment_on=workers")
    augment_on: Literal["auto", "device", "workers"] = Field(
        "auto", description="device: batched views on the training device from the split held in memory; "
                            "workers: per-sample torchvision transforms in DataLoader workers; "
                            "auto: device when the split fits data.memory_budget_mb, else workers")
    memory_budget_mb: int = Field(8192, ge=1, description="largest decoded split (MiB) held in memory "
                                                          "(on the GPU under CUDA) for data.augment_on=device")
    stream: bool | Literal["auto"] = Field(
        "auto", description="true: each data-parallel worker reads only its own shards of the staged version, "
                            "per epoch, through a shuffle buffer (memory: one shard + the buffer); false: every "
                            "worker holds the whole version; auto: true when it is over data.memory_budget_mb")
    shuffle_buffer: int = Field(10_000, ge=1, description="encoded samples a streaming worker holds to shuffle")
    source: str | None = Field(None, description="staged training data: s3://<bucket>/datasets/<name>/<version>, "
                                                  "<name>@<version> or <name>@latest (overrides dataset/root)")
    test_source: str | None = Field(None, description="staged test data for the kNN monitor / probe (same forms)")
    normalize: Literal["auto", "fashion-mnist", "cifar10", "imagenet"] = Field(
        "auto", description="the channel statistics the encoder's input is normalised with, in training and "
                            "in every later use; auto: the dataset's own (ImageNet's for imagefolder and images)")

    @property
    def norm(self) -> str:
        """The key of the input statistics (`simsiam.augment.NORM_STATS`)."""
        return self.dataset if self.normalize == "auto" else self.normalize


class StorageConfig(_Section):
    """S3 object store. Credentials are NOT config: they come from the AWS chain (env, profile,
    instance role) or, for the embedded SeaweedFS, from the state dir."""

    endpoint_url: str | None = Field(None, description="S3 endpoint; None = $SIMSIAM_S3_ENDPOINT or the embedded "
                                                        "SeaweedFS")
    bucket: str = Field("data", min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]+[a-z0-9]$")
    region: str = "us-east-1"
    shard_size: int = Field(10_000, ge=1, description="samples per Parquet shard")
    max_image_side: int = Field(256, ge=8, description="an image collection is staged with its images shrunk to "
                                                       "this longer side at most (never enlarged)")
    outage_budget_s: float = Field(120.0, ge=0, description="how long S3 may stay unreachable (a restart, "
                                   "throttling) before a run that reached it stops; retried with backoff meanwhile")


class TrackingConfig(_Section):
    """MLflow run logging and the registry gate. The tracking URI is not config: --tracking-uri,
    $MLFLOW_TRACKING_URI, or the embedded server."""

    experiment: str = "simsiam"
    promote_floor: float = Field(0.0, ge=0, le=100, description="probe/top1 (%) a version needs to become champion")
    flush_every_steps: int = Field(50, ge=1, description="send buffered metrics every N steps")
    system_metrics: bool = True


class TrainConfig(_Section):
    epochs: int = Field(1, ge=1)
    batch_size: int = Field(512, ge=2)
    max_steps: int | None = Field(None, ge=1, description="cap on optimizer steps (smoke runs)")
    seed: int = 0
    device: str = Field("auto", description="auto | cpu | cuda | cuda:N")
    channels_last: bool | Literal["auto"] = Field(False, description="NHWC memory format; auto: on CUDA, "
                                                                     "and on CPUs with native bf16")
    amp: Literal["none", "bf16", "fp16", "auto"] = Field("none", description="autocast dtype; auto: bf16 where "
                                                                             "the device has native bf16, else none")
    compile: bool = False
    checkpoint_every_steps: int | None = Field(None, ge=1, description="also checkpoint every N steps "
                                                                        "(default: each epoch)")
    log_every_steps: int = Field(1, ge=1)


class EvalConfig(_Section):
    """The labelled data that judges an encoder (kNN monitor, probe), named apart from the training
    data, and the label-free metrics that judge it without labels. Unset: the training data's own
    labelled splits; none for an image collection, where training runs without the kNN monitor and
    the label-free judge gates the encoder."""

    dataset: LabelledName | None = Field(None, description="labelled evaluation data, with its own train and "
                                                           "test splits (None = the training data's)")
    root: str | None = Field(None, description="directory with the evaluation dataset's files")
    source: str | None = Field(None, description="staged evaluation train split (same forms as data.source)")
    test_source: str | None = Field(None, description="staged evaluation test split")
    knn_every_epochs: int = Field(1, ge=0, description="0 disables the kNN monitor during training")
    knn_at_start: bool = Field(False, description="also run the monitor before step 0 (random-init baseline)")
    knn_k: int = Field(200, ge=1)
    knn_t: float = Field(0.1, gt=0)
    knn_train_samples: int | None = Field(None, ge=1, description="memory-bank size for the monitor (None = all)")
    knn_test_samples: int | None = Field(None, ge=1)
    probe_train_samples: int | None = Field(None, ge=1, description="train images the final kNN and probe fit "
                                             "on: one seeded sample, the same for every run (None = all)")
    probe_epochs: int = Field(100, ge=1)
    probe_batch_size: int = Field(256, ge=2)
    probe_lr: float = Field(0.1, gt=0, description="probe base lr, scaled by batch/256")
    probe_optimizer: Literal["sgd", "lars"] = "sgd"
    feature_batch_size: int = Field(512, ge=1)
    label_free_every_epochs: int = Field(1, ge=0, description="label-free metrics (RankMe, alignment, uniformity, "
                                         "feature collapse ratio) every N epochs; 0: only after training")
    label_free_samples: int = Field(4096, ge=2, description="training images in the label-free sample (fixed seed, "
                                    "the same for every run)")
    label_free_pairs: int = Field(1024, ge=1, description="of those, images whose two augmented views measure "
                                  "alignment")
    label_free_judge: LabelFreeKey = Field("label_free/std_ratio", description="the label-free metric that judges "
                                           "an encoder where no labelled data exists: the gate's criterion and "
                                           "the sweeps' default metric")


class Config(_Section):
    name: str = "simsiam"
    model: ModelConfig = ModelConfig()
    loss: LossConfig = LossConfig()
    optim: OptimConfig = OptimConfig()
    data: DataConfig = DataConfig()
    train: TrainConfig = TrainConfig()
    eval: EvalConfig = EvalConfig()
    storage: StorageConfig = StorageConfig()
    tracking: TrackingConfig = TrackingConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "Config":
        if self.model.bn == "none" and self.model.proj_layers < 2:  # pragma: no cover - Literal guards it
            raise ValueError("model.proj_layers must be 2 or 3")
        if self.loss.target != "online" and not self.loss.stop_grad:
            raise ValueError(f"loss.target={self.loss.target} gives constant targets; loss.stop_grad=false "
                             "needs loss.target=online")
        if self.loss.target == "moving_average" and self.loss.symmetry == "asymmetric_2x":
            raise ValueError("loss.target=moving_average keeps one memory row per image; use loss.symmetry="
                             "symmetric or asymmetric, not asymmetric_2x")
        if self.data.train_subset is not None and self.data.train_subset < self.train.batch_size:
            raise ValueError(
                f"data.train_subset={self.data.train_subset} is smaller than train.batch_size="
                f"{self.train.batch_size}: no full batch can be formed"
            )
        return self

    def eval_as_data(self) -> "Config":
        """This config with the evaluation data as its `data` (to read or stage it as training data is)."""
        data = self.data.model_copy(update={"dataset": self.eval.dataset, "root": self.eval.root, "source": None,
                                            "test_source": None})
        return self.model_copy(update={"data": data})

    @property
    def has_eval_data(self) -> bool:
        """Is there labelled data to judge the encoder: eval.* names some, or the training data has labels."""
        return bool(self.eval.dataset or self.eval.source) or self.data.dataset != "images"

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def config_hash(self) -> str:
        """What the run computes (fault injection is not config: tests inject it from outside). How long
        to wait out an outage is not: a run re-run with a longer budget is the same run, and resumes."""
        computed = self.to_dict()
        computed["storage"].pop("outage_budget_s", None)
        return hashlib.sha256(json.dumps(computed, sort_keys=True).encode()).hexdigest()[:12]

    def flat(self) -> dict[str, Any]:
        """Dotted-key view, e.g. for tracking params."""
        out: dict[str, Any] = {}

        def walk(prefix: str, node: Any) -> None:
            if isinstance(node, dict):
                for k, v in node.items():
                    walk(f"{prefix}.{k}" if prefix else k, v)
            else:
                out[prefix] = node

        walk("", self.to_dict())
        return out


def sweep_space(cfg: Config, lr: list[float] | None = None, batch: list[int] | None = None,
                grid: dict[str, list] | None = None) -> dict[str, list]:
    """The grid: base lr (default the preset's x 0.5, 1, 2) x batch (default the preset's) x `grid`
    axes. Every key and value is checked against the config before any trial starts."""
    base = cfg.optim.base_lr
    space = {"optim.base_lr": list(lr or [base / 2, base, base * 2]),
             "train.batch_size": list(batch or [cfg.train.batch_size]), **(grid or {})}
    for key, values in space.items():
        if not values:
            raise ConfigError(f"sweep axis {key} has no values")
        for v in values:
            override_config(cfg, [f"{key}={v}"])
    return space


def sweep_metric_for(cfg: Config, metric: str | None = None) -> str:
    """What a sweep ranks its trials by (ASHA and the best trial): `metric`, by default the kNN monitor
    where labelled data exists, else `eval.label_free_judge`. One line when the key is unknown or needs labels."""
    from simsiam import metrics as M

    metric = metric or (M.KNN_MONITOR if cfg.has_eval_data else cfg.eval.label_free_judge)
    if metric not in M.OBJECTIVES:
        raise ConfigError(f"--metric {metric!r} cannot rank a sweep; allowed: {', '.join(M.OBJECTIVES)}")
    if metric == M.KNN_MONITOR and not cfg.has_eval_data:
        raise ConfigError(f"--metric {metric} needs labelled evaluation data: name some with eval.dataset (--eval "
                          f"fashion-mnist, cifar10[:DIR] or imagefolder:DIR), or rank by {cfg.eval.label_free_judge}")
    return metric


def list_presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def preset_summary(name: str) -> str:
    """A bundled preset's one-line summary: the first line of its YAML, a comment by convention."""
    first = (PRESETS_DIR / f"{name}.yaml").read_text().split("\n", 1)[0]
    return first.removeprefix("#").strip() if first.startswith("#") else ""


def _read_yaml(preset_or_path: str | Path) -> dict[str, Any]:
    path = Path(preset_or_path)
    if not (path.suffix in {".yaml", ".yml"} or path.exists()):
        path = PRESETS_DIR / f"{preset_or_path}.yaml"
        if not path.exists():
            raise ConfigError(
                f"unknown preset {str(preset_or_path)!r}; allowed: {', '.join(list_presets())} or a path to a YAML file"
            )
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {path} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a mapping at the top level")
    return data


def _set_dotted(tree: dict[str, Any], override: str) -> None:
    if "=" not in override:
        raise ConfigError(f"override {override!r} must look like key.sub=value")
    key, raw = override.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override {override!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override {key!r}: {part!r} is not a section")
        node = child
    node[parts[-1]] = value


def _format_error(err: dict[str, Any]) -> str:
    key = ".".join(str(p) for p in err["loc"]) or "<config>"
    kind = err["type"]
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        section = _section_for(err["loc"][:-1])
        allowed = ", ".join(sorted(section.model_fields)) if section else "?"
        return f"unknown key {key!r}; allowed keys here: {allowed}"
    if kind == "value_error":  # our cross-field checks: their message names the keys; the input is the whole tree
        return err["msg"].removeprefix("Value error, ")
    if kind == "literal_error":
        return f"{key}={err.get('input')!r} is not allowed; allowed values: {ctx.get('expected')}"
    return f"{key}: {err['msg']} (got {err.get('input')!r})"


def _section_for(loc: Sequence[Any]) -> type[BaseModel] | None:
    model: type[BaseModel] = Config
    for part in loc:
        field = model.model_fields.get(str(part))
        ann = getattr(field, "annotation", None)
        if not (isinstance(ann, type) and issubclass(ann, BaseModel)):
            return None
        model = ann
    return model


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Configs saved while fault injection was config (`train.fail_at_step`, then a `faults` section):
    checkpoints and config.yaml of old runs load without it, and hash as they did."""
    train = data.get("train")
    if isinstance(train, dict) and "fail_at_step" in train:
        data = {**data, "train": {k: v for k, v in train.items() if k != "fail_at_step"}}
    return {k: v for k, v in data.items() if k != "faults"}


def validate_config(data: dict[str, Any]) -> Config:
    """A config as saved (a preset, a checkpoint's, a run's config.yaml), older layouts included."""
    return _validated(_upgrade(data))


def _validated(data: dict[str, Any]) -> Config:
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        msgs = [_format_error(e) for e in exc.errors()]
        raise ConfigError("invalid config: " + "; ".join(msgs)) from None


def override_config(cfg: Config, overrides: Sequence[str]) -> Config:
    """A copy of `cfg` with `key.sub=value` overrides applied and re-validated; `cfg` itself when
    there are none (a Config is immutable and was validated when it was made)."""
    if not overrides:
        return cfg
    data = cfg.to_dict()
    for override in overrides:
        _set_dotted(data, override)
    return _validated(data)  # no upgrade: a key of an old layout is an unknown key here


def load_config(preset_or_path: str | Path = "cpu-demo", overrides: Sequence[str] = ()) -> Config:
    """Load a preset name (see `configs/`) or a YAML path, then apply `key.sub=value` overrides."""
    data = _read_yaml(preset_or_path)
    for override in overrides:
        _set_dotted(data, override)
    return _validated(data)  # no upgrade: a key of an old layout is an unknown key here
