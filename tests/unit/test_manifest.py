"""Prefetch manifests (control/manifest.py) and the split of a fleet into waves (control/warmup.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecdn.control import warmup
from edgecdn.control.manifest import parse_line, read_manifest
from edgecdn.control.prefetch import PrefetchItem
from edgecdn.control.warmup import waves_of
from edgecdn.errors import UsageError


@pytest.mark.parametrize(
    ("line", "parsed"),
    [
        ("", None),
        ("   # a comment", None),
        ("/app.js", ("/app.js", {})),
        ("/app.js  Accept-Encoding: br", ("/app.js", {"Accept-Encoding": "br"})),
        (
            "/a\tAccept-Encoding: gzip, br   X-Tenant:a",
            ("/a", {"Accept-Encoding": "gzip, br", "X-Tenant": "a"}),
        ),
        ("https://cdn.example/x?v=1 Accept: */*", ("https://cdn.example/x?v=1", {"Accept": "*/*"})),
    ],
    ids=["blank", "comment", "url", "one-header", "two-headers-value-with-space", "absolute-url"],
)
def test_text_lines(line: str, parsed: object) -> None:
    assert parse_line(line) == parsed


def test_a_text_manifest_of_10000_lines(tmp_path: Path) -> None:
    path = tmp_path / "manifest.txt"
    lines = ["# edgecdn prefetch manifest", ""] + [f"/assets/f{i}.js" for i in range(10_000)]
    path.write_text("\n".join([*lines, "/app.js  Accept-Encoding: br"]) + "\n")
    items = read_manifest(path)
    assert len(items) == 10_001
    assert items[0] == PrefetchItem("/assets/f0.js")
    assert items[-1] == PrefetchItem("/app.js", (("Accept-Encoding", "br"),))


def test_the_json_manifest_of_edgecdn_version(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    files = {"js/a b.js": {"path": "js/a b.0123456789abcdef.js", "size": 3, "hash": "0123456789abcdef"}}
    path.write_text(json.dumps({"version": 1, "files": files}))
    assert read_manifest(path) == [PrefetchItem("/js/a%20b.0123456789abcdef.js")]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("/ok\nnot-a-path\n", "m:2: 'not-a-path' is not"),
        ("/ok\n/a  no colon here\n", "m:2: expected `URL [Name: value ...]`"),
        ("/a  Host: evil\n", "m:1: 'Host' is not a header a prefetch may send"),
        ('{"version": 2, "files": {}}', "manifest.json of `edgecdn version`"),
        ('{"version": 1, "files": {"a": {"path": "/abs"}}}', "expected a relative path"),
        ("{not json", "invalid JSON manifest"),
    ],
    ids=["relative-url", "garbage-after-url", "refused-header", "json-version", "json-abs-path", "bad-json"],
)
def test_bad_manifests_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "m"
    path.write_text(text)
    with pytest.raises(UsageError) as e:
        read_manifest(path)
    assert message in str(e.value)


def test_missing_or_binary_manifest(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such file"):
        read_manifest(tmp_path / "nope")
    (tmp_path / "bin").write_bytes(b"/a\n\xff\xfe\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_manifest(tmp_path / "bin")


@pytest.mark.parametrize(
    ("n_edges", "waves", "sizes"),
    [(3, 3, [1, 1, 1]), (3, 1, [3]), (5, 2, [3, 2]), (2, 5, [1, 1]), (7, 3, [3, 2, 2])],
)
def test_waves_split_the_fleet_in_order(n_edges: int, waves: int, sizes: list[int]) -> None:
    edges = [f"http://127.0.0.1:{9000 + i}" for i in range(n_edges)]
    split = waves_of(edges, waves)
    assert [len(w) for w in split] == sizes
    assert [e for w in split for e in w] == edges


async def test_origin_rate_spaces_batches_over_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """--origin-rate: 10 URLs/s means a second batch of 5 waits 0.5 s after the first."""
    now = [100.0]
    slept: list[float] = []

    async def fake_sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    monkeypatch.setattr(warmup.clock, "monotonic", lambda: now[0])
    monkeypatch.setattr(warmup.asyncio, "sleep", fake_sleep)
    limit = warmup.RateLimit(10.0)
    for _ in range(3):
        await limit.take(5)
    assert slept == [0.5, 0.5]
    await warmup.RateLimit(0).take(1000)  # no cap
    assert slept == [0.5, 0.5]
