"""Pure parts of purge, push and versioned objects: request validation, matching, keys, immutability."""

from __future__ import annotations

import pytest

from edgecdn.control.purge import BadPurge, PurgeRequest, parse_purge, url_key
from edgecdn.errors import AdminError
from edgecdn.policy.immutable import IMMUTABLE_CACHE_CONTROL, IMMUTABLE_LIFETIME_S, immutable_headers, pin
from edgecdn.policy.stored import StoredResponse
from edgecdn.serve.push import push_key


@pytest.mark.parametrize(
    ("url", "key"),
    [
        ("/a/b", "/a/b"),
        ("/a/b?x=1&y", "/a/b?x=1&y"),
        ("http://edge.example/a/b?x=1", "/a/b?x=1"),
        ("https://edge.example", "/"),
        ("/%7Euser/a%20b", "/%7Euser/a%20b"),  # the raw target, as the cache keys it
    ],
    ids=["path", "query-kept", "absolute-url", "bare-host", "escapes-kept"],
)
def test_url_key_is_the_raw_path_and_query(url: str, key: str) -> None:
    assert url_key(url) == key


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([], "JSON object"),
        ({}, "nothing to purge"),
        ({"urls": []}, "nothing to purge"),
        ({"urls": "/a"}, "urls: expected a list"),
        ({"urls": [""]}, "urls: expected a list"),
        ({"tags": [1]}, "tags: expected a list"),
        ({"prefixes": ["a/"]}, "must start with /"),
        ({"urls": ["/a"], "soft": "yes"}, "soft: expected true or false"),
        ({"urls": ["/a"], "hard": True}, "unknown field 'hard'"),
        ({"urls": ["ftp://x/y"]}, "not an http(s) URL"),
        ({"urls": ["relative/path"]}, "not an http(s) URL"),
        ({"tags": ["t"] * 10_001}, "at most 10000"),
        ({"tags": ["t" * 9000]}, "longer than"),
    ],
    ids=lambda v: str(v)[:30],
)
def test_bad_purge_bodies_name_the_problem(body: object, message: str) -> None:
    with pytest.raises(BadPurge, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_purge(body)


def test_good_purge_body() -> None:
    req = parse_purge({"urls": ["http://e/a?b=1"], "prefixes": ["/img/"], "tags": ["t1"], "soft": True})
    assert req == PurgeRequest(urls=("/a?b=1",), prefixes=("/img/",), tags=("t1",), soft=True)
    assert parse_purge(req.to_json()) == req


@pytest.mark.parametrize(
    ("req", "primary", "tags", "matches"),
    [
        (PurgeRequest(urls=("/a",)), "/a", ("x",), True),
        (PurgeRequest(urls=("/a",)), "/a?v=2", None, False),
        (PurgeRequest(prefixes=("/img/",)), "/img/logo.png", (), True),
        (PurgeRequest(prefixes=("/img/",)), "/images/x", None, False),
        (PurgeRequest(tags=("t1",)), "/x", ("t0", "t1"), True),
        (PurgeRequest(tags=("t1",)), "/x", ("t2",), False),
        (PurgeRequest(tags=("t1",)), "/x", None, True),  # head not in yet: doomed to be safe
        (PurgeRequest(urls=("/a",)), "/x", None, False),
    ],
    ids=["url", "query-differs", "prefix", "prefix-no", "tag", "tag-no", "tag-unknown", "url-no"],
)
def test_which_in_flight_fills_a_purge_dooms(
    req: PurgeRequest, primary: str, tags: tuple[str, ...] | None, matches: bool
) -> None:
    assert req.matches(primary, tags) is matches


@pytest.mark.parametrize(
    "target",
    [
        "/../etc/passwd",
        "/a/../../b",
        "/a/%2e%2e/b",
        "/a/%2E%2e/b",
        "/a/..%2fb",
        "/a%2f..%2f..%2fb",
        "/a\\..\\b",
        "/a/%5c../b",
        "/a/./b",
        "/a/%00b",
        "/a\x00b",
        "/a\nb",
        "/",
        "",
        "relative",
    ],
)
def test_push_paths_with_traversal_or_control_characters_are_refused(target: str) -> None:
    with pytest.raises(AdminError) as e:
        push_key(target)
    assert e.value.status == 400


@pytest.mark.parametrize("target", ["/a", "/a/b.c.js", "/a/..b/c", "/a/b?x=../y", "/%7Euser/x"])
def test_plain_push_paths_are_their_own_cache_key(target: str) -> None:
    assert push_key(target) == target


def test_versioned_objects_are_stored_immutable_whatever_the_origin_said() -> None:
    fields = (("Content-Type", "text/css"), ("Cache-Control", "no-cache"), ("Expires", "0"), ("Pragma", "x"))
    assert immutable_headers(fields) == (
        ("Content-Type", "text/css"),
        ("Cache-Control", IMMUTABLE_CACHE_CONTROL),
    )
    stored = StoredResponse(
        status=200,
        headers=(),
        size=1,
        response_time=0.0,
        initial_age=0.0,
        lifetime=0.0,
        must_revalidate=True,
        no_cache=True,
    )
    pinned = pin(stored)
    assert pinned.lifetime == IMMUTABLE_LIFETIME_S
    assert not pinned.must_revalidate and not pinned.no_cache
