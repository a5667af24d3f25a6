"""Origin health: passive max_fails / window / down time / probation, active rise / fall, events."""

import pytest

from edgecdn.policy.health import (
    HealthConfig,
    OriginHealth,
    Reason,
    Status,
    Transition,
    is_up,
    record_failure,
    record_probe,
    record_success,
    refresh,
)

CFG = HealthConfig(max_fails=3, fail_window_s=10.0, down_s=10.0, rise=2, fall=3)

# An event is (kind, at): "fail" / "ok" are requests, "probe-fail" / "probe-ok" active checks.
Event = tuple[str, float]


def _replay(events: list[Event], cfg: HealthConfig = CFG) -> tuple[OriginHealth, list[Transition]]:
    state = OriginHealth()
    seen: list[Transition] = []
    for kind, at in events:
        match kind:
            case "fail":
                state, change = record_failure(state, cfg, at)
            case "ok":
                state, change = record_success(state, cfg, at)
            case "probe-fail":
                state, change = record_probe(state, cfg, False, at)
            case "probe-ok":
                state, change = record_probe(state, cfg, True, at)
            case "refresh":
                state, change = refresh(state, cfg, at)
            case _:
                raise AssertionError(kind)
        if change is not None:
            seen.append(change)
    return state, seen


def _fails(*times: float) -> list[Event]:
    return [("fail", t) for t in times]


def _probes(*results: tuple[bool, float]) -> list[Event]:
    return [("probe-ok" if ok else "probe-fail", t) for ok, t in results]


F, T = False, True


UP, DOWN = Status.UP, Status.DOWN


@pytest.mark.parametrize(
    ("events", "at", "up"),
    [
        pytest.param([], 0.0, True, id="fresh-origin-is-up"),
        pytest.param(_fails(0, 1, 2), 2.0, False, id="passive-down-after-max-fails-in-window"),
        pytest.param(_fails(0, 1), 1.0, True, id="passive-up-below-max-fails"),
        pytest.param(_fails(0, 6, 12, 18), 18.0, True, id="passive-fails-spread-beyond-window"),
        pytest.param(_fails(0, 5, 10), 10.0, True, id="passive-window-excludes-its-start"),
        pytest.param(_fails(0, 5, 9.99), 9.99, False, id="passive-window-just-inside"),
        pytest.param([*_fails(0, 1), ("ok", 2), ("fail", 3)], 3.0, True, id="success-resets"),
        pytest.param(_fails(0, 1, 2), 11.99, False, id="passive-down-for-down-s"),
        pytest.param(_fails(0, 1, 2), 12.0, True, id="passive-up-again-after-down-s"),
        pytest.param(_fails(0, 1, 2, 13), 13.0, False, id="probation-one-failure-down-again"),
        pytest.param(_fails(0, 1, 2, 13), 22.99, False, id="probation-failure-full-down-s"),
        pytest.param(_fails(0, 1, 2, 13), 23.0, True, id="probation-failure-then-up"),
        pytest.param([*_fails(0, 1, 2), ("ok", 12.5), ("fail", 13)], 13.0, True, id="success-ends-probation"),
        pytest.param([*_fails(0, 1, 2), ("ok", 5)], 5.0, False, id="late-success-does-not-cut-penalty"),
        pytest.param(_fails(0, 1, 2, 3, 4, 5), 12.0, True, id="fails-during-penalty-do-not-extend"),
        pytest.param(_probes((F, 0), (F, 1), (F, 2)), 2.0, False, id="active-fall"),
        pytest.param(_probes((F, 0), (F, 1)), 1.0, True, id="active-below-fall"),
        pytest.param(
            _probes((F, 0), (F, 1), (T, 2), (F, 3)),
            3.0,
            True,
            id="active-fall-needs-consecutive",
        ),
        pytest.param(
            _probes((F, 0), (F, 1), (F, 2), (T, 3)),
            3.0,
            False,
            id="active-below-rise",
        ),
        pytest.param(
            _probes((F, 0), (F, 1), (F, 2), (T, 3), (T, 4)),
            4.0,
            True,
            id="active-rise",
        ),
        pytest.param(
            _probes((F, 0), (F, 1), (F, 2), (T, 3), (F, 4), (T, 5)),
            5.0,
            False,
            id="active-rise-needs-consecutive",
        ),
        pytest.param(
            [*_probes((F, 0), (F, 1), (F, 2)), *_fails(3, 4, 5)],
            20.0,
            False,
            id="probe-down-outlasts-passive-penalty",
        ),
        pytest.param(
            [*_fails(0, 1, 2), *_probes((T, 3), (T, 4))],
            4.0,
            False,
            id="probe-rise-does-not-lift-passive-penalty",
        ),
    ],
)
def test_is_up(events: list[Event], at: float, up: bool) -> None:
    state, _ = _replay(events)
    assert is_up(state, CFG, at) is up


def test_max_fails_zero_disables_passive() -> None:
    cfg = HealthConfig(max_fails=0)
    state, seen = _replay(_fails(*range(20)), cfg)
    assert is_up(state, cfg, 19.0)
    assert seen == []


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        pytest.param(
            _fails(0, 1, 2),
            [Transition(UP, DOWN, Reason.MAX_FAILS, 2.0)],
            id="event-max-fails",
        ),
        pytest.param(
            [*_fails(0, 1, 2), ("refresh", 11), ("refresh", 12), ("refresh", 13)],
            [
                Transition(UP, DOWN, Reason.MAX_FAILS, 2.0),
                Transition(DOWN, UP, Reason.DOWN_ELAPSED, 12.0),
            ],
            id="event-down-elapsed-once",
        ),
        pytest.param(
            [*_fails(0, 1, 2), ("refresh", 12), ("fail", 13)],
            [
                Transition(UP, DOWN, Reason.MAX_FAILS, 2.0),
                Transition(DOWN, UP, Reason.DOWN_ELAPSED, 12.0),
                Transition(UP, DOWN, Reason.PROBATION_FAILURE, 13.0),
            ],
            id="event-probation-failure",
        ),
        pytest.param(
            [*_fails(0, 1, 2, 13)],
            [Transition(UP, DOWN, Reason.MAX_FAILS, 2.0)],
            id="event-never-down-twice-without-up-between",
        ),
        pytest.param(
            [*_fails(0, 1, 2), ("ok", 14)],
            [
                Transition(UP, DOWN, Reason.MAX_FAILS, 2.0),
                Transition(DOWN, UP, Reason.DOWN_ELAPSED, 14.0),
            ],
            id="event-late-up-reported-on-next-call",
        ),
        pytest.param(
            _probes((F, 0), (F, 1), (F, 2), (F, 3), (T, 4), (T, 5), (T, 6)),
            [
                Transition(UP, DOWN, Reason.PROBE_FALL, 2.0),
                Transition(DOWN, UP, Reason.PROBE_RISE, 5.0),
            ],
            id="event-probe-fall-and-rise",
        ),
        pytest.param(
            [
                *_probes((F, 0), (F, 1), (F, 2)),
                *_fails(3, 4, 5),
                *_probes((T, 6), (T, 7)),
                ("refresh", 15),
            ],
            [
                Transition(UP, DOWN, Reason.PROBE_FALL, 2.0),
                Transition(DOWN, UP, Reason.DOWN_ELAPSED, 15.0),
            ],
            id="event-up-only-when-both-verdicts-clear",
        ),
    ],
)
def test_transitions(events: list[Event], expected: list[Transition]) -> None:
    assert _replay(events)[1] == expected


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"max_fails": -1}, id="negative-max-fails"),
        pytest.param({"fail_window_s": 0.0}, id="zero-window"),
        pytest.param({"down_s": -1.0}, id="negative-down"),
        pytest.param({"rise": 0}, id="zero-rise"),
        pytest.param({"fall": 0}, id="zero-fall"),
    ],
)
def test_config_refuses_bad_values(fields: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HealthConfig(**fields)  # type: ignore[arg-type]


def test_defaults() -> None:
    assert HealthConfig() == CFG
