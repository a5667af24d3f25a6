"""Origin health: passive (nginx `max_fails` / `fail_timeout`) and active (rise / fall) verdicts.

Rules of this file: pure, `now` is a monotonic reading passed in; a Transition is returned only when
the status differs from the last one reported, so logs and counters never see two DOWNs in a row.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Status(StrEnum):
    UP = "up"
    DOWN = "down"


class Reason(StrEnum):
    MAX_FAILS = "max_fails"
    PROBATION_FAILURE = "probation_failure"
    DOWN_ELAPSED = "down_elapsed"
    PROBE_FALL = "probe_fall"
    PROBE_RISE = "probe_rise"


@dataclass(frozen=True, slots=True)
class HealthConfig:
    """`max_fails` failures within `fail_window_s`: down for `down_s`; `max_fails=0`: no passive."""

    max_fails: int = 3
    fail_window_s: float = 10.0
    down_s: float = 10.0
    rise: int = 2
    fall: int = 3

    def __post_init__(self) -> None:
        if self.max_fails < 0:
            raise ValueError("max_fails: must be >= 0 (0 = no passive checks)")
        if self.fail_window_s <= 0 or self.down_s <= 0:
            raise ValueError("fail_window_s, down_s: must be > 0")
        if self.rise < 1 or self.fall < 1:
            raise ValueError("rise, fall: must be >= 1")


@dataclass(frozen=True, slots=True)
class Transition:
    """A status change for the caller to log and count."""

    before: Status
    after: Status
    reason: Reason
    at: float


@dataclass(frozen=True, slots=True)
class OriginHealth:
    """One origin's health; the default is a fresh origin, up until proven otherwise.

    `down_until` stays set after it passes: the origin is then up on probation until a success
    clears it, and one failure takes it down again (nginx keeps `fails` the same way).
    """

    fail_times: tuple[float, ...] = ()
    down_until: float | None = None
    probe_ok: int = 0
    probe_fail: int = 0
    probe_down: bool = False
    reported: Status = Status.UP


def _status(state: OriginHealth, now: float) -> Status:
    penalised = state.down_until is not None and now < state.down_until
    return Status.DOWN if penalised or state.probe_down else Status.UP


def is_up(state: OriginHealth, cfg: HealthConfig, now: float) -> bool:
    """Up only if both verdicts agree; exact at `now` even when no DOWN_ELAPSED was reported yet."""
    return _status(state, now) is Status.UP


def _settle(
    before: OriginHealth, after: OriginHealth, now: float, cause: Reason
) -> tuple[OriginHealth, Transition | None]:
    """Report a change against the last reported status; one that predates this event was time."""
    status = _status(after, now)
    if status is after.reported:
        return after, None
    reason = cause if _status(before, now) is not status else Reason.DOWN_ELAPSED
    return replace(after, reported=status), Transition(after.reported, status, reason, now)


def refresh(state: OriginHealth, cfg: HealthConfig, now: float) -> tuple[OriginHealth, Transition | None]:
    """Report a penalty that ran out; call it from a timer to log DOWN_ELAPSED when it happens."""
    return _settle(state, state, now, Reason.DOWN_ELAPSED)


def record_failure(
    state: OriginHealth, cfg: HealthConfig, now: float
) -> tuple[OriginHealth, Transition | None]:
    """A request failed. Failures during a penalty do not extend it; it is a fixed price."""
    if cfg.max_fails == 0 or (state.down_until is not None and now < state.down_until):
        return _settle(state, state, now, Reason.MAX_FAILS)
    if state.down_until is not None:
        penalised = replace(state, down_until=now + cfg.down_s)
        return _settle(state, penalised, now, Reason.PROBATION_FAILURE)
    recent = (*(t for t in state.fail_times if now - t < cfg.fail_window_s), now)
    if len(recent) >= cfg.max_fails:
        penalised = replace(state, fail_times=(), down_until=now + cfg.down_s)
        return _settle(state, penalised, now, Reason.MAX_FAILS)
    return _settle(state, replace(state, fail_times=recent), now, Reason.MAX_FAILS)


def record_success(
    state: OriginHealth, cfg: HealthConfig, now: float
) -> tuple[OriginHealth, Transition | None]:
    """A request succeeded: clears the failure count and ends probation (nginx).

    It does not cut a running penalty short: requests in flight when the origin went down finish
    later, and their successes say little about the origin now.
    """
    if state.down_until is not None and now < state.down_until:
        return _settle(state, state, now, Reason.DOWN_ELAPSED)
    return _settle(state, replace(state, fail_times=(), down_until=None), now, Reason.DOWN_ELAPSED)


def record_probe(
    state: OriginHealth, cfg: HealthConfig, ok: bool, now: float
) -> tuple[OriginHealth, Transition | None]:
    """An active check ended: `rise` passes in a row bring it up, `fall` failures take it down."""
    if ok:
        streak = min(state.probe_ok + 1, cfg.rise)
        probed = replace(
            state, probe_ok=streak, probe_fail=0, probe_down=state.probe_down and streak < cfg.rise
        )
        return _settle(state, probed, now, Reason.PROBE_RISE)
    streak = min(state.probe_fail + 1, cfg.fall)
    probed = replace(state, probe_ok=0, probe_fail=streak, probe_down=state.probe_down or streak >= cfg.fall)
    return _settle(state, probed, now, Reason.PROBE_FALL)
