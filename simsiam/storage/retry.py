"""Riding through an endpoint's outage: a call that failed on a transient error (a refused or dropped
connection, throttling) is retried with capped exponential backoff until it succeeds or the outage
budget (`storage.outage_budget_s`) is spent. The client's own retries (botocore's, the AWS C++ SDK's)
cover seconds; this covers a restarted server or a minute of throttling."""

from __future__ import annotations

import logging
import time
from typing import Callable, TypeVar

T = TypeVar("T")
BACKOFF_S = (1.0, 2.0, 4.0, 8.0, 10.0)  # then every 10 s until the budget is spent
log = logging.getLogger("simsiam.storage")


class OutageTooLong(Exception):
    """The endpoint stayed unreachable for the whole budget; `cause` is the last error."""

    def __init__(self, cause: Exception, waited_s: float) -> None:
        super().__init__(str(cause))
        self.cause, self.waited_s = cause, waited_s


def with_retries(call: Callable[[], T], transient: Callable[[Exception], bool], budget_s: float,
                 what: str = "the S3 endpoint", sleep: Callable[[float], None] = time.sleep) -> T:
    """`call()`, retried on `transient` errors for up to `budget_s` seconds; other errors raise at once.
    Raises OutageTooLong once the budget is spent."""
    start = time.monotonic()
    for attempt in range(10**6):
        try:
            return call()
        except Exception as exc:  # noqa: BLE001 - classified by `transient`
            if not transient(exc):
                raise
            waited = time.monotonic() - start
            if waited >= budget_s:
                raise OutageTooLong(exc, waited) from None
            delay = min(BACKOFF_S[min(attempt, len(BACKOFF_S) - 1)], budget_s - waited)
            if attempt == 0:
                log.warning("%s is unreachable (%s); retrying for up to %.0f s", what, str(exc)[:120], budget_s)
            sleep(delay)
    raise AssertionError("unreachable")
