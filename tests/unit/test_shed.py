"""Overload shedding decisions (policy/shed.py)."""

from __future__ import annotations

import pytest

from edgecdn.config import ShedConfig
from edgecdn.policy.shed import Shed, shed_miss

CFG = ShedConfig(max_fills=4, retry_after_min=2.0, retry_after_max=10.0)


@pytest.mark.parametrize(
    ("in_flight", "joins", "cfg", "shed"),
    [
        (3, False, CFG, False),
        (4, False, CFG, True),
        (9, False, CFG, True),
        (9, True, CFG, False),
        (1000, False, ShedConfig(), False),
    ],
    ids=["under-the-limit", "at-the-limit", "over-the-limit", "joining-a-running-fill", "off-by-default"],
)
def test_only_new_fills_over_the_limit_are_shed(
    in_flight: int, joins: bool, cfg: ShedConfig, shed: bool
) -> None:
    assert (shed_miss(in_flight, joins_running_fill=joins, cfg=cfg, u=0.5) is not None) is shed


def test_retry_after_spreads_over_the_configured_range() -> None:
    spread = {shed_miss(4, joins_running_fill=False, cfg=CFG, u=i / 100) for i in range(100)}
    assert {s.retry_after for s in spread if isinstance(s, Shed)} == set(range(2, 11))
    tiny = ShedConfig(max_fills=1, retry_after_min=1.0, retry_after_max=1.0)
    assert shed_miss(1, joins_running_fill=False, cfg=tiny, u=0.99) == Shed(1, 1)
