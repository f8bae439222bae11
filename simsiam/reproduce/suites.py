"""The paper's claims and the trials that test them. Each trial is the preset plus one switch;
trials with the same resulting config run once and serve every claim that names them.

Paper numbers are ImageNet linear-probe top-1 (%) after 100 epochs (Chen & He 2021, Tables 1-5,
Sec. 5); ours are each trial's linear probe top-1 (%) on the preset's test split, or, for a claim
with `metric="loss"`, its training loss at the last step. Claims compare trials (`greater`: the first
beats the second: a higher probe, or a lower loss) or read the collapse diagnostic (`healthy`,
`collapses`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from simsiam.config import Config, override_config
from simsiam.errors import ConfigError

Kind = Literal["healthy", "collapses", "greater", "measured"]
Metric = Literal["probe", "loss"]


@dataclass(frozen=True)
class Claim:
    suite: str
    table: str
    words: str
    paper: str
    kind: Kind
    trials: tuple[str, ...]  # greater: (better, worse); healthy/collapses: every trial named must be so
    metric: Metric = "probe"  # what `greater` compares: the linear probe (higher wins) or the last loss (lower wins)
    sized: bool = True  # False: the claim is "at least as good", so the paper's gap is not its size to test


def _switch(cfg: Config, key: str) -> list[str]:
    """The overrides of the preset that make trial `key`. The one-epoch snapshot is sized only when
    asked for, so presets without data.train_subset still run the other suites."""
    if key == "snapshot_epoch":
        return ["loss.target=snapshot", f"loss.snapshot_every_steps={_steps_per_epoch(cfg)}"]
    d, b = cfg.model.dim, cfg.train.batch_size
    return {
        "baseline": [],
        "no_stop_grad": ["loss.stop_grad=false"],
        "no_predictor": ["model.predictor=none"],
        "fixed_random_predictor": ["model.predictor=fixed_random"],
        "pred_lr_decayed": ["optim.fix_pred_lr=false"],
        "batch_half": [f"train.batch_size={b // 2}"],
        "batch_double": [f"train.batch_size={b * 2}"],
        "bn_none": ["model.bn=none"],
        "bn_hidden": ["model.bn=hidden"],
        "bn_default": ["model.bn=default"],
        "bn_all": ["model.bn=all"],
        "cross_entropy": ["loss.similarity=cross_entropy"],
        "asymmetric": ["loss.symmetry=asymmetric"],
        "asymmetric_2x": ["loss.symmetry=asymmetric_2x"],
        "dim_quarter": [f"model.dim={max(2, d // 4)}"],
        "snapshot_1": [],  # k=1 is SimSiam itself: bit-identical weights (test_targets), so the baseline serves
        "snapshot_10": ["loss.target=snapshot", "loss.snapshot_every_steps=10"],
        "snapshot_100": ["loss.target=snapshot", "loss.snapshot_every_steps=100"],
        "ma_no_predictor": ["loss.target=moving_average", "model.predictor=none"],
    }[key]


def _steps_per_epoch(cfg: Config) -> int:
    if cfg.data.train_subset is None:
        raise ConfigError("reproduce sizes the one-epoch snapshot (Sec. 5) from data.train_subset; set it")
    return max(1, cfg.data.train_subset // cfg.train.batch_size)


CLAIMS: list[Claim] = [
    Claim("collapse", "Fig. 2", "With stop-gradient and a predictor, SimSiam does not collapse", "67.7",
          "healthy", ("baseline",)),
    Claim("collapse", "Fig. 2", "Without stop-gradient the output collapses", "0.1", "collapses", ("no_stop_grad",)),
    Claim("collapse", "Table 1a", "Without the predictor the output collapses", "0.1", "collapses", ("no_predictor",)),
    Claim("collapse", "Table 1b", "A predictor fixed at its random init does far worse than a trained one",
          "67.7 vs 1.5", "greater", ("baseline", "fixed_random_predictor")),
    Claim("collapse", "Table 1b", "With a predictor fixed at its random init the loss does not converge: it stays high",
          "loss stays high (Sec. 4.2)", "greater", ("baseline", "fixed_random_predictor"), metric="loss"),
    Claim("ablations", "Table 1c", "A predictor lr held fixed beats a cosine-decayed one", "68.1 vs 67.7",
          "greater", ("baseline", "pred_lr_decayed")),
    Claim("ablations", "Table 2", "No batch size collapses (x1/2, x1, x2 of the preset's)",
          "66.1-68.1 over 64-1024", "healthy", ("batch_half", "baseline", "batch_double")),
    Claim("ablations", "Table 3", "BN in the heads beats no BN at all", "68.1 vs 34.6", "greater",
          ("bn_default", "bn_none")),
    Claim("ablations", "Table 3", "BN on the projector output helps a little over hidden-only BN", "68.1 vs 67.4",
          "greater", ("bn_default", "bn_hidden")),
    Claim("ablations", "Table 3", "BN on the predictor output makes training unstable", "68.1 vs unstable",
          "greater", ("bn_default", "bn_all")),
    Claim("ablations", "Table 4", "Cosine similarity beats cross-entropy", "68.1 vs 63.2", "greater",
          ("baseline", "cross_entropy")),
    Claim("ablations", "Table 5", "The symmetric loss beats the asymmetric one", "68.1 vs 64.8", "greater",
          ("baseline", "asymmetric")),
    Claim("ablations", "Table 5", "Asymmetric on two pairs per image (2x) beats asymmetric", "67.3 vs 64.8",
          "greater", ("asymmetric_2x", "asymmetric")),
    Claim("ablations", "output dim", "Output dim d beats d/4", "68.1 vs 67.2 (2048 vs 512)", "greater",
          ("baseline", "dim_quarter")),
    Claim("em", "Sec. 5", "10-step alternation is at least as good as 1-step", "68.7 vs 68.1", "greater",
          ("snapshot_10", "snapshot_1"), sized=False),
    Claim("em", "Sec. 5", "100-step alternation is at least as good as 1-step", "68.9 vs 68.1", "greater",
          ("snapshot_100", "snapshot_1"), sized=False),
    Claim("em", "Sec. 5", "1-step alternation beats one-epoch alternation", "68.1 vs 67.0", "greater",
          ("snapshot_1", "snapshot_epoch")),
    Claim("em", "Sec. 5", "A moving-average target without a predictor does not collapse", "55.0", "healthy",
          ("ma_no_predictor",)),
    Claim("em", "Sec. 5", "Without the moving average (and no predictor) it collapses", "0.1", "collapses",
          ("no_predictor",)),
]

SUITES = ("collapse", "ablations", "em")


@dataclass(frozen=True)
class TrialRun:
    """One trial to run: `key` (a switch) at `seed`, as `overrides` of the preset."""

    name: str
    key: str
    seed: int
    overrides: tuple[str, ...]
    tables: tuple[str, ...]  # the paper tables and claims it serves (the MLflow tags reproduce.table/claim)
    claims: tuple[str, ...]

    @property
    def tags(self) -> dict[str, str]:
        return {"reproduce.table": ", ".join(self.tables), "reproduce.claim": "; ".join(self.claims),
                "reproduce.trial": self.key, "reproduce.seed": str(self.seed)}


def claims_of(suite: str) -> list[Claim]:
    if suite not in (*SUITES, "all"):
        raise ConfigError(f"unknown suite {suite!r}; allowed: {', '.join(SUITES)}, all")
    return [c for c in CLAIMS if suite in ("all", c.suite)]


def plan_trials(cfg: Config, suite: str, seeds: int) -> tuple[list[Claim], list[TrialRun], dict[str, str]]:
    """The claims of `suite`, the trials to run (switches with the same resulting config run once),
    and key -> the key whose trials stand in for it."""
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    claims = claims_of(suite)
    keys = list(dict.fromkeys(k for c in claims for k in c.trials))
    switches = {key: _switch(cfg, key) for key in keys}
    by_config: dict[str, str] = {}
    alias: dict[str, str] = {}
    for key in keys:
        resolved = override_config(cfg, switches[key]).config_hash()  # also validates every switch up front
        alias[key] = by_config.setdefault(resolved, key)
    runs = []
    for key in dict.fromkeys(alias.values()):
        served = [c for c in claims if any(alias[k] == key for k in c.trials)]
        tables = tuple(dict.fromkeys(c.table for c in served))
        for seed in range(seeds):
            overrides = (*switches[key], f"train.seed={cfg.train.seed + seed}")
            runs.append(TrialRun(f"{key}-seed{seed}", key, seed, overrides, tables, tuple(c.words for c in served)))
    return claims, runs, alias
