"""The prefetch body and task model (control/prefetch.py): validation, the bounded queue, expiry."""

from __future__ import annotations

import pytest

from edgecdn.config import PrefetchConfig
from edgecdn.control.prefetch import (
    BadPrefetch,
    PrefetchItem,
    QueueFull,
    Registry,
    UrlState,
    parse_prefetch,
)


def test_items_merge_task_headers_under_per_url_headers() -> None:
    items = parse_prefetch(
        {
            "headers": {"accept-encoding": "gzip", "X-Tenant": "a"},
            "urls": ["http://cdn.example/a.js?v=1", {"url": "/b.css", "headers": {"Accept-Encoding": "br"}}],
        },
        max_urls=10,
    )
    assert items == (
        PrefetchItem("/a.js?v=1", (("Accept-Encoding", "gzip"), ("X-Tenant", "a"))),
        PrefetchItem("/b.css", (("Accept-Encoding", "br"), ("X-Tenant", "a"))),
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({"urls": []}, "non-empty list"),
        ({"urls": ["/a"], "extra": 1}, "unknown field"),
        ({"urls": ["/a", "/b", "/c"]}, "at most 2"),
        ({"urls": ["ftp://x/y"]}, "urls[0]: 'ftp://x/y' is not"),
        ({"urls": ["relative"]}, "urls[0]"),
        ({"urls": [{"url": "/a", "x": 1}]}, "only url and headers"),
        ({"urls": ["/a"], "headers": {"Range": "bytes=0-1"}}, "not a header a prefetch may send"),
        ({"urls": ["/a"], "headers": {"Bad Name": "x"}}, "not a header a prefetch may send"),
        ({"urls": ["/a"], "headers": {"X": "a\r\nB: c"}}, "printable string"),
        ({"urls": ["/a"], "headers": {"X": 1}}, "printable string"),
    ],
    ids=lambda v: str(v)[:40],
)
def test_bad_bodies_name_the_field(body: object, message: str) -> None:
    with pytest.raises(BadPrefetch) as e:
        parse_prefetch(body, max_urls=2)
    assert message in str(e.value)


def test_registry_bounds_the_queue_and_tracks_states() -> None:
    reg = Registry(PrefetchConfig(queue=3, keep_results=60.0))
    task = reg.submit("t1", (PrefetchItem("/a"), PrefetchItem("/b")), now=100.0)
    assert task.state == "queued"
    with pytest.raises(QueueFull) as full:
        reg.submit("t2", (PrefetchItem("/c"), PrefetchItem("/d")), now=100.0)
    assert full.value.detail == {"queued": 2, "limit": 3, "asked": 2}
    assert "t2" not in reg.tasks and len(reg.waiting) == 2  # nothing of a refused task is queued
    job = reg.next()
    assert job is not None and job[1].state is UrlState.RUNNING and task.state == "running"
    job[1].state = UrlState.WARMED
    reg.finish(*job, now=101.0)
    second = reg.next()
    assert second is not None
    second[1].state = UrlState.FAILED
    reg.finish(*second, now=102.0)
    assert task.state == "done" and task.to_json()["counts"]["warmed"] == 1
    assert reg.next() is None


def test_finished_tasks_are_kept_for_keep_results_then_forgotten() -> None:
    reg = Registry(PrefetchConfig(keep_results=60.0))
    task = reg.submit("t1", (PrefetchItem("/a"),), now=0.0)
    job = reg.next()
    assert job is not None
    job[1].state = UrlState.FRESH
    reg.finish(*job, now=10.0)
    assert reg.get("t1", now=70.0) is task
    assert reg.get("t1", now=70.1) is None


def test_finish_refuses_a_state_that_is_not_final() -> None:
    reg = Registry(PrefetchConfig())
    reg.submit("t1", (PrefetchItem("/a"),), now=0.0)
    job = reg.next()
    assert job is not None
    with pytest.raises(ValueError, match="not a final state"):
        reg.finish(*job, now=1.0)


def test_at_most_max_tasks_are_remembered_oldest_finished_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("edgecdn.control.prefetch.MAX_TASKS", 2)
    reg = Registry(PrefetchConfig(keep_results=3600.0))
    for n in range(3):
        reg.submit(f"t{n}", (PrefetchItem("/a"),), now=float(n))
        job = reg.next()
        assert job is not None
        job[1].state = UrlState.WARMED
        reg.finish(*job, now=float(n))
    reg.submit("t3", (PrefetchItem("/a"),), now=3.0)  # still queued: never dropped
    assert list(reg.tasks) == ["t2", "t3"]
