"""Storage faults: every StorageError counted by cause, and logged at most once per cause per interval.

Rules of this file: recording never raises and never blocks (a counter and maybe a log line), from any
thread; a broken disk produces one log line per cause per `LOG_EVERY_S`, never one per request.
"""

from __future__ import annotations

import logging
from collections import Counter

from edgecdn import clock
from edgecdn.errors import StorageError
from edgecdn.metrics import Metrics

log = logging.getLogger("edgecdn.storage")

LOG_EVERY_S = 60.0


class Faults:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self.metrics = metrics
        self.counts: Counter[str] = Counter()
        self._logged_at: dict[str, float] = {}
        self._unlogged: Counter[str] = Counter()

    def record(self, err: StorageError) -> None:
        cause = err.cause
        self.counts[cause] += 1
        if self.metrics is not None:
            self.metrics.storage_faults.labels(cause).inc()
        now = clock.monotonic()
        last = self._logged_at.get(cause)
        if last is not None and now - last < LOG_EVERY_S:
            self._unlogged[cause] += 1
            return
        self._logged_at[cause] = now
        more = self._unlogged.pop(cause, 0)
        also = f" (and {more} more since the last report)" if more else ""
        log.warning("storage error [%s]: %s%s", cause, err, also)
