"""The model registry: each trained backbone becomes a version of `simsiam-<dataset>-<backbone>`;
the gate gives it `challenger`, and `champion` only when it is better. Decisions and their reasons
are written on the version."""

from __future__ import annotations

import os
import time

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from simsiam import metrics as M
from simsiam.config import Config
from simsiam.errors import TrackingError
from simsiam.tracking.card import model_card
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


NOT_JUDGED = ("not promoted: no labelled evaluation data judged it (name some with eval.dataset, e.g. "
              "--eval fashion-mnist)")


def gate_decision(probe_top1: float | None, collapsed: bool, floor: float, champ_probe: float | None,
                  champ_version: str | None, measured_on: str | None = None,
                  champ_measured_on: str | None = None) -> tuple[bool, list[str]]:
    """(promote?, reasons): not collapsed, probe >= floor, and strictly better than the champion on
    the same eval set. Probes measured on different sets (or one on a recorded set, one not) are not
    compared: such a version stays challenger until re-evaluated on the champion's set or promoted
    by hand (`simsiam models promote`). A version with no probe (no labelled evaluation data) is
    registered, never promoted."""
    if probe_top1 is None:
        return False, [NOT_JUDGED]
    if champ_probe is not None and measured_on != champ_measured_on:
        return False, [f"{M.PROBE} {probe_top1:.2f} not compared with champion v{champ_version} "
                       f"({champ_probe:.2f}): measured on {measured_on or 'an unrecorded set'}, the champion on "
                       f"{champ_measured_on or 'an unrecorded set'}"]
    reasons, promote = [], True
    if collapsed:
        promote = False
        reasons.append("collapsed (z_std*sqrt(d) below threshold)")
    if probe_top1 < floor:
        promote = False
        reasons.append(f"{M.PROBE} {probe_top1:.2f} < floor {floor:.2f}")
    if champ_probe is not None and not probe_top1 > champ_probe:
        promote = False
        reasons.append(f"{M.PROBE} {probe_top1:.2f} does not beat champion v{champ_version} ({champ_probe:.2f})")
    if promote:
        reasons.append(f"{M.PROBE} {probe_top1:.2f} >= floor {floor:.2f}, not collapsed, "
                       + (f"beats champion v{champ_version} ({champ_probe:.2f})" if champ_probe is not None
                          else "no previous champion"))
    return promote, reasons


def register_and_gate(client: MlflowClient, run_id: str, model_uri: str, name: str, probe_top1: float | None,
                      collapsed: bool, floor: float = 0.0, eval_set: dict[str, str] | None = None) -> dict:
    """Register the run's backbone and gate it; `eval_set` (simsiam.evaluation.eval_set) says what the
    probe was measured on and goes onto the version. A version holds one role: `champion` when promoted
    (and not `challenger` too), else `challenger`. Idempotent per run: a gated version is returned as is
    (`noop`), and a version registered by an attempt that died before its gate is gated now. The
    decision tag is written last, so a version that has one has its alias."""
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
    eval_set = eval_set or {}
    if mv is not None and champ is not None and str(champ.version) == str(mv.version):
        # an attempt that died after crowning this version: it is not compared with itself, it stays champion
        promote, reasons = True, [mv.tags.get("gate.reasons") or "crowned by an earlier attempt of this run"]
    else:
        champ_probe = float(champ.tags.get(M.PROBE, "nan")) if champ else None
        promote, reasons = gate_decision(probe_top1, collapsed, floor, champ_probe, champ.version if champ else None,
                                         eval_set.get("eval.set"), champ.tags.get("eval.set") if champ else None)
    decision = CHAMPION if promote else CHALLENGER
    if mv is None:
        with tracking_uri_scope(client.tracking_uri):
            probe = {M.PROBE: repr(float(probe_top1))} if probe_top1 is not None else {}
            mv = mlflow.register_model(model_uri, name, tags={**probe, "collapsed": str(collapsed).lower(),
                                                              "run_id": run_id, **eval_set})
    client.set_model_version_tag(name, mv.version, "gate.reasons", "; ".join(reasons))
    client.update_model_version(name, mv.version, description=model_card(client.tracking_uri, run_id, name,
                                                                          mv.version, decision, reasons))
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
            rows.append({"name": rm.name, "version": mv.version, "aliases": sorted(aliases.get(str(mv.version), [])),
                         M.PROBE: mv.tags.get(M.PROBE), "decision": mv.tags.get("gate.decision"),
                         "run_id": mv.run_id})
    rows.sort(key=lambda r: (r["name"], -int(r["version"])))
    return rows
