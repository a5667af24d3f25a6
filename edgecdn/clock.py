"""The one place that reads the clock; everything else takes `now` as an argument (STYLE.md rule 2)."""

import time


def now() -> float:
    """Wall-clock seconds since the epoch, for HTTP dates and ages."""
    return time.time()


def monotonic() -> float:
    """Seconds on a clock that never goes back, for deadlines and durations."""
    return time.monotonic()
