"""A Ray Train run that outlives its services' outages. Inside a fit, Ray's checkpoint storage
retries (`storage_fs`), the data store retries (`simsiam.storage.retry`) and rank 0's MLflow
reporter buffers. When a fit fails all the same while a service is down (its workers were
restarted into the outage), the driver waits for the service with backoff and fits again under the
same run name, which resumes from the last complete checkpoint, until the outage budget is spent."""

from __future__ import annotations

import logging
import socket
import time
from urllib.parse import urlsplit

from simsiam.storage.retry import BACKOFF_S, OutageTooLong, with_retries

log = logging.getLogger("simsiam.ray")
CONNECTION_MARKS = ("Max retries exceeded", "Connection refused", "Connection reset")  # the MLflow client's
STORAGE_MARKS = ("NETWORK_CONNECTION", "Could not connect", "unreachable for")  # the S3 clients' (ours, Arrow's)


class Unreachable(str):
    """Why a run stopped: a service stayed down for the whole budget (a one-line reason)."""


def outage_endpoints(cfg, dist) -> dict[str, str]:
    """The services a Ray run needs while it trains, by what they are to it."""
    from simsiam.storage.client import s3_endpoint

    out = {}
    if dist.storage is not None and dist.storage.endpoint_url:
        out["Ray's checkpoint storage, the S3 endpoint"] = dist.storage.endpoint_url
    data = s3_endpoint(cfg.storage.endpoint_url)
    if cfg.data.source and data and data not in out.values():
        out["the data's S3 endpoint"] = data
    if dist.tracking_uri and dist.tracking_uri.startswith("http"):
        out["the MLflow tracking server"] = dist.tracking_uri
    return out


def _down(endpoints: dict[str, str]) -> dict[str, str]:
    down = {}
    for what, url in endpoints.items():
        parts = urlsplit(url)
        try:
            port = parts.port or (443 if parts.scheme == "https" else 80)
            socket.create_connection((parts.hostname, port), timeout=3).close()
        except OSError:
            down[what] = url
    return down


def fit_through_outages(trainer, endpoints: dict[str, str], budget_s: float):
    """`trainer.fit()`, fitted again (resuming) after a failure while a service was down, once it is
    back; each outage may last `budget_s` seconds. A failure that names a storage connection while
    everything answers again (a blip) is fitted again once. Returns (result, error): error None, the
    failure in one line, or an `Unreachable` once a service stayed down for the budget."""
    blip_refit = True
    while True:
        try:
            result = trainer.fit()  # Ray 2.60 raises when training fails for good (after max_failures restarts)
            error = repr(result.error) if result.error else None
        except Exception as exc:  # noqa: BLE001 - reported in one line by the caller
            result, error = None, f"{type(exc).__name__}: {str(exc)[:500]}"
        if error is None:
            return result, None
        down = _down(endpoints)
        if not down:
            if blip_refit and any(mark in error for mark in STORAGE_MARKS):
                blip_refit = False
                continue
            return result, error
        deadline, attempt = time.monotonic() + budget_s, 0
        while down and time.monotonic() < deadline:
            time.sleep(min(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], max(0.0, deadline - time.monotonic())))
            attempt += 1
            down = _down(endpoints)
        if down:
            what, url = next(iter(down.items()))
            return None, Unreachable(f"{what} {url} was unreachable for {budget_s:.0f} s (storage.outage_budget_s)")
        log.warning("%s reachable again after a failed fit (%s); resuming from the last checkpoint",
                    ", ".join(endpoints), error[:160])


def end_run_when_reachable(tracking_uri: str, run_id: str, status: str, budget_s: float) -> None:
    """End the run, waiting out an outage of the tracking server."""
    from simsiam.tracking import end_run

    try:
        with_retries(lambda: end_run(tracking_uri, run_id, status),
                     lambda exc: any(mark in str(exc) for mark in (*CONNECTION_MARKS, "ConnectionError")), budget_s,
                     f"the MLflow tracking server {tracking_uri}")
    except OutageTooLong as exc:
        log.warning("could not mark MLflow run %s %s: %s", run_id, status, str(exc.cause)[:200])
