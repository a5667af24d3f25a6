"""Jittered client downloads (control/jitter.py): spread, determinism, path rules, bad queries."""

from __future__ import annotations

from collections import Counter

import pytest

from edgecdn.config import JitterConfig, JitterRule
from edgecdn.control.jitter import answer, delay_ms, window_for

CFG = JitterConfig(window=60.0, rules=(JitterRule("/game/", 600.0), JitterRule("/", 0.0)))
NOW = 1_800_000_000.0


def test_10000_clients_spread_evenly_over_the_window() -> None:
    window_ms = 600_000
    buckets = Counter(
        delay_ms(f"client-{i}", "/game/patch.bin", window_ms, now=NOW) // 1000 for i in range(10_000)
    )
    fair = 10_000 / 600
    assert set(buckets) <= set(range(600))
    assert max(buckets.values()) <= 2 * fair, buckets.most_common(3)
    assert len(buckets) > 590  # nearly every second of the window gets someone


def test_the_delay_is_deterministic_per_client_object_and_release_window() -> None:
    first = delay_ms("c1", "/a", 10_000, now=NOW)
    assert delay_ms("c1", "/a", 10_000, now=NOW + 0.001) == first  # a retry keeps its place
    others = {delay_ms("c1", f"/a{i}", 10_000, now=NOW) for i in range(20)}
    assert len(others) > 15  # another object, another place
    later = {delay_ms("c1", "/a", 10_000, now=NOW + 10 * k) for k in range(1, 20)}
    assert len(later) > 15  # a later release window reshuffles
    assert delay_ms("c1", "/a", 0, now=NOW) == 0


def test_the_first_matching_rule_sets_the_window() -> None:
    assert window_for("/game/x.bin", CFG) == 600.0
    assert window_for("/other", CFG) == 0.0
    assert window_for("/other", JitterConfig(window=5.0)) == 5.0


def test_answer_is_json_with_not_before_in_epoch_ms() -> None:
    status, body = answer(CFG, "/game/x.bin?v=2", "c1", now=NOW)
    assert status == 200
    assert body["url"] == "/game/x.bin?v=2" and body["window_ms"] == 600_000
    assert 0 <= body["delay_ms"] < 600_000
    assert body["not_before"] == int(NOW * 1000) + body["delay_ms"]
    assert answer(CFG, "http://cdn.example/game/x.bin?v=2", "c1", now=NOW)[1] == body


def test_without_a_client_id_the_place_is_random() -> None:
    delays = {answer(CFG, "/game/x.bin", None, now=NOW)[1]["delay_ms"] for _ in range(20)}
    assert len(delays) > 15


@pytest.mark.parametrize(
    ("url", "client"),
    [
        (None, "c"),
        ("", "c"),
        ("relative", "c"),
        ("ftp://x/y", "c"),
        ("/a", ""),
        ("/a", "x\n"),
        ("/a", "x" * 300),
    ],
    ids=["no-url", "empty-url", "relative", "ftp", "empty-client", "control-char", "long-client"],
)
def test_bad_queries_are_400_json(url: str | None, client: str) -> None:
    status, body = answer(CFG, url, client, now=NOW)
    assert status == 400 and body["error"] == "bad jitter request" and body["detail"]
