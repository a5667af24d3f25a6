"""Origin selection: each policy's pick and retry order; down, backup and max_conns; hashing."""

from collections import Counter
from collections.abc import Sequence

import pytest

from edgecdn.policy.balance import (
    Balancer,
    OriginSpec,
    Policy,
    make_balancer,
)

N = 100_000


def _origins(n: int = 3, **overrides: dict[int, object]) -> list[OriginSpec]:
    """`n` origins; `weight={0: 5}`, `backup={2: True}`, `max_conns={0: 2}` set single fields."""
    specs = []
    for i in range(n):
        fields = {name: per_index[i] for name, per_index in overrides.items() if i in per_index}
        specs.append(OriginSpec(f"http://o{i}.example:8080", **fields))  # type: ignore[arg-type]
    return specs


def _order(
    b: Balancer,
    *,
    up: Sequence[bool] | None = None,
    conns: Sequence[int] | None = None,
    key: str = "/k",
    client_ip: str = "192.0.2.1",
) -> tuple[int, ...]:
    n = len(b.origins)
    return b.order(
        up=up if up is not None else (True,) * n,
        conns=conns if conns is not None else (0,) * n,
        key=key,
        client_ip=client_ip,
    )


def _ip(k: int) -> str:
    return f"10.{k >> 16 & 255}.{k >> 8 & 255}.{k & 255}"


def _picks(policy: Policy, origins: Sequence[OriginSpec], n: int = N) -> list[int]:
    """First picks per origin over `n` requests, each with its own key and client IP."""
    b = make_balancer(policy, origins)
    picks = Counter(_order(b, key=f"/assets/{k}.js", client_ip=_ip(k))[0] for k in range(n))
    return [picks[i] for i in range(len(origins))]


# --- distribution over 100 000 requests, 3 origins ---------------------------------------------


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(Policy.ROUND_ROBIN, id="round-robin-exact-thirds"),
        pytest.param(Policy.WEIGHTED_ROUND_ROBIN, id="wrr-equal-weights-exact-thirds"),
        pytest.param(Policy.LEAST_CONN, id="least-conn-idle-ties-rotate-exact-thirds"),
        pytest.param(Policy.WEIGHTED_LEAST_CONN, id="wlc-idle-ties-rotate-exact-thirds"),
    ],
)
def test_rotating_policies_split_exactly(policy: Policy) -> None:
    assert _picks(policy, _origins()) == [33_334, 33_333, 33_333]


@pytest.mark.parametrize(
    "policy",
    [
        pytest.param(Policy.SOURCE_HASH, id="source-hash-roughly-even"),
        pytest.param(Policy.URI_HASH, id="uri-hash-roughly-even"),
    ],
)
def test_hash_policies_split_roughly_evenly(policy: Policy) -> None:
    for picks in _picks(policy, _origins()):
        assert abs(picks / N - 1 / 3) <= 0.15 / 3


def test_failover_sends_everything_to_the_first() -> None:
    assert _picks(Policy.FAILOVER, _origins()) == [N, 0, 0]


def test_uri_hash_adding_an_origin_moves_about_a_quarter_of_keys_all_to_it() -> None:
    three = make_balancer(Policy.URI_HASH, _origins(3))
    four = make_balancer(Policy.URI_HASH, _origins(4))
    moved = 0
    for k in range(N):
        before = _order(three, key=f"/assets/{k}.js")[0]
        after = _order(four, key=f"/assets/{k}.js")[0]
        if before != after:
            moved += 1
            assert after == 3, "a key moved between two old origins"
    assert 0.18 <= moved / N <= 0.32


def test_uri_hash_keys_of_a_down_origin_move_and_the_others_stay() -> None:
    b = make_balancer(Policy.URI_HASH, _origins())
    for k in range(3_000):
        healthy = _order(b, key=f"/{k}")
        degraded = _order(b, key=f"/{k}", up=(True, False, True))
        if healthy[0] == 1:
            assert degraded[0] == healthy[1], "the ring successor takes over"
        else:
            assert degraded[0] == healthy[0]


# --- per-policy rules ----------------------------------------------------------------------------


def test_wrr_smooth_sequence_matches_nginx() -> None:
    b = make_balancer(Policy.WEIGHTED_ROUND_ROBIN, _origins(weight={0: 5}))
    picks = [_order(b)[0] for _ in range(14)]
    assert picks == [0, 0, 1, 0, 2, 0, 0] * 2


def test_wrr_shares_follow_weights() -> None:
    picks = _picks(Policy.WEIGHTED_ROUND_ROBIN, _origins(weight={0: 5}), n=70_000)
    assert picks == [50_000, 10_000, 10_000]


def test_wrr_skips_a_down_origin_without_bursts() -> None:
    b = make_balancer(Policy.WEIGHTED_ROUND_ROBIN, _origins(weight={0: 2, 2: 2}))
    picks = [_order(b, up=(True, False, True))[0] for _ in range(8)]
    assert picks == [0, 2] * 4


def test_round_robin_rotates_among_up_origins() -> None:
    b = make_balancer(Policy.ROUND_ROBIN, _origins())
    picks = [_order(b, up=(True, False, True))[0] for _ in range(6)]
    assert picks == [0, 2] * 3
    assert _order(b, up=(True, False, True)) == (0, 2, 1)


@pytest.mark.parametrize(
    ("policy", "specs", "conns", "pick"),
    [
        pytest.param(Policy.LEAST_CONN, _origins(), (3, 1, 2), 1, id="least-conn-picks-the-min"),
        pytest.param(
            Policy.LEAST_CONN,
            _origins(weight={0: 10}),
            (3, 1, 2),
            1,
            id="least-conn-ignores-weight",
        ),
        pytest.param(
            Policy.WEIGHTED_LEAST_CONN,
            _origins(weight={1: 2, 2: 3}),
            (2, 3, 4),
            2,
            id="wlc-cross-multiply-4/3-beats-3/2-and-2/1",
        ),
        pytest.param(
            Policy.WEIGHTED_LEAST_CONN,
            _origins(weight={0: 4}),
            (3, 1, 1),
            0,
            id="wlc-heavy-origin-with-more-conns-still-wins",
        ),
    ],
)
def test_least_conn_pick(policy: Policy, specs: list[OriginSpec], conns: tuple[int, ...], pick: int) -> None:
    assert _order(make_balancer(policy, specs), conns=conns)[0] == pick


def test_least_conn_retry_order_is_by_conns() -> None:
    b = make_balancer(Policy.LEAST_CONN, _origins())
    assert _order(b, conns=(3, 1, 2)) == (1, 2, 0)


@pytest.mark.parametrize(
    ("policy", "specs", "conns"),
    [
        pytest.param(Policy.LEAST_CONN, _origins(), (2, 2, 5), id="least-conn-ties-round-robin"),
        pytest.param(
            Policy.WEIGHTED_LEAST_CONN,
            _origins(weight={1: 3}),
            (1, 3, 5),
            id="wlc-equal-ratios-1/1-3/3-tie-round-robin",
        ),
    ],
)
def test_least_conn_ties_go_round_robin(
    policy: Policy, specs: list[OriginSpec], conns: tuple[int, ...]
) -> None:
    b = make_balancer(policy, specs)
    assert [_order(b, conns=conns)[0] for _ in range(4)] == [0, 1, 0, 1]


@pytest.mark.parametrize(
    ("up", "expected"),
    [
        pytest.param((True, True, True), (0, 1, 2), id="failover-primary-first"),
        pytest.param((False, True, True), (1, 2, 0), id="failover-next-then-down-last"),
        pytest.param((False, False, True), (2, 0, 1), id="failover-last-standing"),
        pytest.param((False, False, False), (0, 1, 2), id="failover-all-down-still-list-order"),
    ],
)
def test_failover_order(up: tuple[bool, ...], expected: tuple[int, ...]) -> None:
    assert _order(make_balancer(Policy.FAILOVER, _origins()), up=up) == expected


def test_failover_is_sticky_and_fails_back() -> None:
    b = make_balancer(Policy.FAILOVER, _origins())
    timeline = [(True, True, True)] * 2 + [(False, True, True)] * 3 + [(True, True, True)] * 2
    assert [_order(b, up=up)[0] for up in timeline] == [0, 0, 1, 1, 1, 0, 0]


def test_source_hash_is_stable_per_client_ip() -> None:
    b = make_balancer(Policy.SOURCE_HASH, _origins())
    for k in range(1_000):
        first = _order(b, client_ip=_ip(k), key="/a")
        assert _order(b, client_ip=_ip(k), key=f"/other/{k}") == first


@pytest.mark.parametrize(
    ("policy", "subject", "expected"),
    [
        pytest.param(Policy.URI_HASH, "/index.html", (1, 0, 2), id="uri-hash-index"),
        pytest.param(Policy.URI_HASH, "/app.3f2a9c1d0b4e5f67.js", (2, 0, 1), id="uri-hash-asset"),
        pytest.param(Policy.URI_HASH, "/img/logo.png", (0, 2, 1), id="uri-hash-image"),
        pytest.param(Policy.SOURCE_HASH, "192.0.2.1", (2, 0, 1), id="source-hash-ipv4"),
        pytest.param(Policy.SOURCE_HASH, "198.51.100.7", (1, 0, 2), id="source-hash-ipv4-other"),
        pytest.param(Policy.SOURCE_HASH, "2001:db8::1", (2, 1, 0), id="source-hash-ipv6"),
    ],
)
def test_hash_orders_are_pinned_across_processes(
    policy: Policy, subject: str, expected: tuple[int, ...]
) -> None:
    """Every edge must agree: a change here (salted `hash()`, new ring) remaps the whole fleet."""
    b = make_balancer(policy, _origins())
    assert _order(b, key=subject, client_ip=subject) == expected


# --- tiers: down, backup, max_conns (every policy) -----------------------------------------------

ALL = [pytest.param(p, id=p.value) for p in Policy]


@pytest.mark.parametrize("policy", ALL)
def test_down_origin_goes_last(policy: Policy) -> None:
    b = make_balancer(policy, _origins())
    for k in range(30):
        order = _order(b, up=(True, False, True), key=f"/{k}", client_ip=_ip(k))
        assert sorted(order) == [0, 1, 2]
        assert order[-1] == 1


@pytest.mark.parametrize("policy", ALL)
def test_all_down_still_gives_a_full_order(policy: Policy) -> None:
    b = make_balancer(policy, _origins())
    assert sorted(_order(b, up=(False, False, False))) == [0, 1, 2]


def test_all_down_round_robin_still_spreads() -> None:
    b = make_balancer(Policy.ROUND_ROBIN, _origins())
    assert [_order(b, up=(False,) * 3)[0] for _ in range(3)] == [0, 1, 2]


@pytest.mark.parametrize("policy", ALL)
def test_backup_unused_while_a_primary_is_up(policy: Policy) -> None:
    b = make_balancer(policy, _origins(backup={2: True}))
    for k in range(30):
        order = _order(b, up=(False, True, True), key=f"/{k}", client_ip=_ip(k))
        assert order == (1, 2, 0), "live primary, then backup, then the down primary"


@pytest.mark.parametrize("policy", ALL)
def test_backup_takes_over_when_no_primary_is_up(policy: Policy) -> None:
    b = make_balancer(policy, _origins(4, backup={2: True, 3: True}))
    for k in range(30):
        order = _order(b, up=(False, False, True, True), key=f"/{k}", client_ip=_ip(k))
        assert set(order[:2]) == {2, 3}
        assert set(order[2:]) == {0, 1}


@pytest.mark.parametrize("policy", ALL)
def test_origin_at_max_conns_is_skipped_to_before_the_down_ones(policy: Policy) -> None:
    b = make_balancer(policy, _origins(4, max_conns={0: 2}))
    for k in range(30):
        order = _order(b, up=(True, True, False, True), conns=(2, 0, 0, 0), key=f"/{k}")
        assert set(order[:2]) == {1, 3}
        assert order[2:] == (0, 2)


@pytest.mark.parametrize("policy", ALL)
def test_backup_used_when_primaries_are_full(policy: Policy) -> None:
    """nginx: a peer at max_conns is unavailable, so the backup serves before it."""
    b = make_balancer(policy, _origins(max_conns={0: 1, 1: 1}, backup={2: True}))
    assert _order(b, conns=(1, 1, 0))[0] == 2


def test_max_conns_zero_is_unlimited() -> None:
    b = make_balancer(Policy.FAILOVER, _origins())
    assert _order(b, conns=(10_000, 0, 0))[0] == 0


# --- construction --------------------------------------------------------------------------------


@pytest.mark.parametrize("policy", ALL)
def test_make_balancer_matches_the_policy(policy: Policy) -> None:
    assert make_balancer(Policy(policy.value), _origins()).policy is policy


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"url": ""}, id="empty-url"),
        pytest.param({"url": "http://a", "weight": 0}, id="weight-zero"),
        pytest.param({"url": "http://a", "max_conns": -1}, id="negative-max-conns"),
    ],
)
def test_origin_spec_refuses_bad_fields(fields: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        OriginSpec(**fields)  # type: ignore[arg-type]


def test_order_refuses_mismatched_lengths() -> None:
    b = make_balancer(Policy.ROUND_ROBIN, _origins())
    with pytest.raises(ValueError):
        b.order(up=(True, True), conns=(0, 0, 0), key="/", client_ip="")


def test_no_origins_is_refused() -> None:
    with pytest.raises(ValueError):
        make_balancer(Policy.FAILOVER, [])
