"""The model registry: each trained backbone becomes a version of `simsiam-<dataset>-<backbone>`;
the gate gives it `challenger`, and `champion` only when it is better. Decisions and their reasons
are written on the version."""

from __future__ import annotations

import math
import os
import time

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from simsiam import metrics as M
from simsiam.config import Config
from simsiam.errors import TrackingError
from simsiam.tracking.card import model_card
from simsiam.tracking.onnx_parity import onnx_parity
from simsiam.tracking.runs import tracking_uri_scope

CHAMPION, CHALLENGER = "champion", "challenger"


def registered_name(cfg: Config) -> str:
    return f"simsiam-{cfg.data.dataset}-{cfg.model.backbone}"


def _by_alias(client: MlflowClient, name: str, alias: str):
    """The version `alias` points at, None when it is not set."""
    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None


def _set_role(client: MlflowClient, name: str, version: str, role: str) -> None:
    """Point `role` at `version`; a version holds one role, so a champion drops `challenger` if it had
    it (an earlier attempt of its run, or a manual promotion of the challenger)."""
    client.set_registered_model_alias(name, role, version)
    challenger = _by_alias(client, name, CHALLENGER) if role == CHAMPION else None
    if challenger is not None and str(challenger.version) == str(version):
        client.delete_registered_model_alias(name, CHALLENGER)


NOT_JUDGED = "not promoted: nothing judged it (no labelled evaluation data and no label-free metrics)"
# What the gate compares, by what judged the encoder: the probe on labelled data, else a label-free
# metric (eval.label_free_judge) on the label-free sample. Each with the tag that says what it was measured on.
CRITERIA = {M.PROBE: "eval.set", **{key: "label_free.set" for key in M.LABEL_FREE}}


def gate_decision(value: float | None, collapsed: bool, floor: float, champ_value: float | None,
                  champ_version: str | None, measured_on: str | None = None, champ_measured_on: str | None = None,
                  criterion: str = M.PROBE, champ_criterion: str = M.PROBE) -> tuple[bool, list[str]]:
    """(promote?, reasons). The version is judged by `criterion` (`probe/top1`, or without labelled data
    a label-free metric, `eval.label_free_judge`): not collapsed, then (probe only) at least
    `floor`, then strictly better than the champion (lower, for a metric where lower is better). A
    champion judged by another criterion, or measured on another set, is not compared with: the
    version stays challenger until judged as the champion was, or promoted by hand
    (`simsiam models promote`)."""
    if value is None or not math.isfinite(value):
        return False, [NOT_JUDGED]
    if collapsed:
        return False, [f"collapsed (z_std*sqrt(d) of the output or the features below threshold): not compared "
                       f"({criterion} {value:.2f})"]
    if champ_value is not None and criterion != champ_criterion:
        return False, [f"{criterion} {value:.2f} not compared with champion v{champ_version}, gated on "
                       f"{champ_criterion} ({champ_value:.2f}): the criteria differ (judge both with the same "
                       "evaluation data, or promote by hand)"]
    if champ_value is not None and measured_on != champ_measured_on:
        return False, [f"{criterion} {value:.2f} not compared with champion v{champ_version} "
                       f"({champ_value:.2f}): measured on {measured_on or 'an unrecorded set'}, the champion on "
                       f"{champ_measured_on or 'an unrecorded set'}"]
    reasons, promote = [], True
    floored = criterion == M.PROBE
    if floored and value < floor:
        promote = False
        reasons.append(f"{criterion} {value:.2f} < floor {floor:.2f}")
    lower = M.OBJECTIVES.get(criterion) == "min"
    if champ_value is not None and not (value < champ_value if lower else value > champ_value):
        promote = False
        reasons.append(f"{criterion} {value:.2f} does not beat champion v{champ_version} ({champ_value:.2f})")
    if promote:
        reasons.append(f"{criterion} {value:.2f}" + (f" >= floor {floor:.2f}" if floored else "") + ", not collapsed, "
                       + (f"beats champion v{champ_version} ({champ_value:.2f})" if champ_value is not None
                          else "no previous champion"))
    return promote, reasons


def champion(client: MlflowClient, name: str):
    """The champion version of `name`, None when there is none."""
    return _by_alias(client, name, CHAMPION)


def _champion_judged(champ, criterion: str | None, remeasured: dict | None) -> tuple:
    """(criterion, value, measured on, how the reasons name it) of the champion version, from its tags
    (older versions: the probe). A champion judged label-free is compared on this version's label-free
    judge when it has that value (the judge changed), and on `remeasured` (its metrics on this
    version's sample) when given."""
    theirs = champ.tags.get("gate.criterion", M.PROBE)
    if theirs in M.LABEL_FREE and criterion in M.LABEL_FREE:
        if remeasured is not None and remeasured.get("version") == champ.version:
            return (criterion, remeasured["metrics"].get(criterion), remeasured["label_free.set"],
                    f"{champ.version}, re-measured on this sample")
        if champ.tags.get(criterion) is not None:
            theirs = criterion
    return (theirs, float(champ.tags.get(theirs, "nan")), champ.tags.get(CRITERIA.get(theirs, "eval.set")),
            champ.version)


def register_and_gate(client: MlflowClient, run_id: str, model_uri: str, name: str, probe_top1: float | None,
                      collapsed: bool, floor: float = 0.0, eval_set: dict[str, str] | None = None,
                      label_free: dict[str, float] | None = None, label_free_set: dict[str, str] | None = None,
                      judge: str = M.FEATURE_STD_RATIO, remeasured: dict | None = None) -> dict:
    """Register the run's backbone and gate it on the probe, or without one on the label-free metric
    `judge` (of `label_free`, measured on `label_free_set`); `eval_set` (simsiam.evaluation.eval_set)
    says what the probe was measured on. Both go onto the version, with the criterion the gate used.
    `remeasured`: a label-free champion's metrics on this version's sample (`version`, `metrics`,
    `label_free.set`), when its own were measured on other images. A version holds one role:
    `champion` when promoted (and not `challenger` too), else `challenger`. Idempotent per run: a
    gated version is returned as is (`noop`), and a version registered by an attempt that died before
    its gate is gated now. The decision tag is written last, so a version that has one has its alias.
    The logged model's ONNX parity check goes onto the version too (`onnx.max_abs_diff`)."""
    try:
        existing = client.search_model_versions(f"name='{name}' and run_id='{run_id}'")
    except MlflowException:
        existing = []
    if existing and existing[0].tags.get("gate.decision"):
        v = existing[0]
        return {"name": name, "version": v.version, "decision": v.tags.get("gate.decision"), "noop": True,
                "reasons": v.tags.get("gate.reasons", "")}
    mv = existing[0] if existing else None
    champ = _by_alias(client, name, CHAMPION)
    eval_set, label_free, label_free_set = eval_set or {}, label_free or {}, label_free_set or {}
    criterion = M.PROBE if probe_top1 is not None else judge if judge in label_free else None
    value = probe_top1 if criterion == M.PROBE else label_free.get(judge)
    sets = {M.PROBE: eval_set, judge: label_free_set}
    if mv is not None and champ is not None and str(champ.version) == str(mv.version):
        # an attempt that died after crowning this version: it is not compared with itself, it stays champion
        promote, reasons = True, [mv.tags.get("gate.reasons") or "crowned by an earlier attempt of this run"]
    else:
        theirs = _champion_judged(champ, criterion, remeasured) if champ else (M.PROBE, None, None, None)
        promote, reasons = gate_decision(value, collapsed, floor, theirs[1], theirs[3],
                                         sets.get(criterion, {}).get(CRITERIA.get(criterion, "")), theirs[2],
                                         criterion or M.PROBE, theirs[0])
    decision = CHAMPION if promote else CHALLENGER
    if mv is None:
        values = {**({M.PROBE: probe_top1} if probe_top1 is not None else {}), **label_free}
        judged = {"gate.criterion": criterion} if criterion else {}
        with tracking_uri_scope(client.tracking_uri):
            mv = mlflow.register_model(model_uri, name, tags={
                **{k: repr(float(v)) for k, v in values.items()}, **judged, "run_id": run_id,
                "collapsed": str(collapsed).lower(), **eval_set, **label_free_set,
                **onnx_parity(client.tracking_uri, model_uri)})
    client.set_model_version_tag(name, mv.version, "gate.reasons", "; ".join(reasons))
    client.update_model_version(name, mv.version, description=model_card(client.tracking_uri, run_id, name,
                                                                          mv.version, decision, reasons, mv.tags))
    _set_role(client, name, mv.version, decision)
    client.set_model_version_tag(name, mv.version, "gate.decision", decision)
    return {"name": name, "version": mv.version, "decision": decision, "noop": False, "reasons": "; ".join(reasons)}


def promote(client: MlflowClient, name: str, version: str, who: str | None = None) -> dict:
    """Manual override: make `version` the champion, recorded on the version."""
    try:
        mv = client.get_model_version(name, str(version))
    except MlflowException:
        raise TrackingError(f"registered model {name!r} has no version {version!r} (see `simsiam models ls`)") from None
    who = who or os.environ.get("USER", "unknown")
    reason = f"manual promotion by {who} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}"
    client.set_model_version_tag(name, mv.version, "gate.decision", "champion (manual)")
    client.set_model_version_tag(name, mv.version, "gate.reasons", reason)
    _set_role(client, name, mv.version, CHAMPION)
    return {"name": name, "version": mv.version, "decision": "champion (manual)", "reasons": reason}


def list_models(client: MlflowClient) -> list[dict]:
    rows = []
    for rm in client.search_registered_models():
        aliases: dict[str, list[str]] = {}
        for alias, version in (rm.aliases or {}).items():
            aliases.setdefault(str(version), []).append(alias)
        for mv in client.search_model_versions(f"name='{rm.name}'"):
            criterion = mv.tags.get("gate.criterion", M.PROBE if mv.tags.get(M.PROBE) else None)
            rows.append({"name": rm.name, "version": mv.version, "aliases": sorted(aliases.get(str(mv.version), [])),
                         M.PROBE: mv.tags.get(M.PROBE), "criterion": criterion,
                         "value": mv.tags.get(criterion) if criterion else None,
                         "eval_set": mv.tags.get(CRITERIA.get(criterion, "eval.set")) if criterion else None,
                         "created": time.strftime("%Y-%m-%d %H:%M", time.localtime(mv.creation_timestamp / 1000)),
                         "decision": mv.tags.get("gate.decision"), "run_id": mv.run_id})
    rows.sort(key=lambda r: (r["name"], -int(r["version"])))
    return rows
