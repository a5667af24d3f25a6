"""TTL jitter (policy/ttl_jitter.py) through freshness(): spread, determinism, Age untouched."""

from __future__ import annotations

from edgecdn.config import CacheConfig, TtlRule
from edgecdn.policy.admit import Exchange, admit
from edgecdn.policy.freshness import freshness
from edgecdn.policy.stored import StoredResponse
from edgecdn.policy.ttl_jitter import spread_lifetime

RULE = TtlRule(prefix="/assets/", ttl=3600.0, mode="override", ttl_jitter=0.1)
CFG = CacheConfig(rules=(RULE, TtlRule(prefix="/", ttl=3600.0, mode="override")))
NOW = 1_800_000_000.0


def lifetime(path: str) -> float:
    return freshness(200, (), path=path, date=NOW, cfg=CFG).lifetime


def test_lifetimes_spread_within_the_rule_jitter_and_stay_per_path() -> None:
    lifetimes = [lifetime(f"/assets/f{i}.js") for i in range(1000)]
    assert all(3240.0 <= t < 3960.0 for t in lifetimes)
    assert len({int(t) for t in lifetimes}) > 500  # objects warmed together expire in many seconds
    assert lifetime("/assets/f7.js") == lifetimes[7]  # every fill of one object agrees
    assert lifetime("/other/f7.js") == 3600.0  # a rule without ttl_jitter is exact


def test_no_rule_or_no_lifetime_is_left_alone() -> None:
    assert spread_lifetime(100.0, None, "/a") == 100.0
    assert spread_lifetime(0.0, RULE, "/a") == 0.0


def test_the_stored_lifetime_moves_and_the_age_does_not() -> None:
    fields = (("Date", "Sat, 15 Jan 2027 08:00:00 GMT"), ("Age", "5"), ("Cache-Control", "max-age=60"))
    plain, spread = (
        admit(Exchange(path, 200, fields, NOW, NOW), cfg=CFG) for path in ("/x/f.js", "/assets/f.js")
    )
    assert isinstance(plain, StoredResponse) and isinstance(spread, StoredResponse)
    assert plain.initial_age == spread.initial_age
    assert plain.lifetime == 3600.0 and spread.lifetime != 3600.0
