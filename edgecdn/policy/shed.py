"""Overload shedding: when too many origin fills run at once, a new miss is refused with a Retry-After.

Rules of this file: pure (no clock, no randomness of its own: `u` is the caller's uniform draw); only a
miss that would start a new fill is shed, never a hit and never a request joining a running fill.
"""

from __future__ import annotations

from dataclasses import dataclass

from edgecdn.config import ShedConfig


@dataclass(frozen=True, slots=True)
class Shed:
    retry_after: int  # seconds, for the Retry-After field (RFC 9110 §10.2.3)
    in_flight: int


def shed_miss(in_flight: int, *, joins_running_fill: bool, cfg: ShedConfig, u: float) -> Shed | None:
    """Shed when `max_fills` fills already run; Retry-After is spread over the configured range by `u`."""
    if cfg.max_fills <= 0 or joins_running_fill or in_flight < cfg.max_fills:
        return None
    spread = cfg.retry_after_max - cfg.retry_after_min
    return Shed(max(1, round(cfg.retry_after_min + u * spread)), in_flight)
