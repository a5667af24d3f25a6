"""Signed admin requests: round trip, each rejection reason, rotation, key parsing, replay bound."""

import base64
import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

import pytest
from multidict import CIMultiDict

from edgecdn.control.signing import (
    EMPTY_BODY_SHA256,
    HEADER_KEY_ID,
    HEADER_SIGNATURE,
    HEADER_TIMESTAMP,
    Accepted,
    AdminKey,
    Reason,
    Rejected,
    ReplayCache,
    Verdict,
    body_digest,
    body_hasher,
    canonical_string,
    format_key,
    generate_key,
    parse_key,
    parse_keys,
    sign,
    verify,
)
from edgecdn.errors import UsageError

NOW = 1_700_000_000.0
KEY = AdminKey("ops", b"k" * 32)
OTHER = AdminKey("ops2", b"o" * 32)
BODY = b'{"urls": ["/a.css"]}'
PATH = "/_edge/purge?soft=1"


def check(
    headers: Mapping[str, str],
    *,
    method: str = "POST",
    path: str = PATH,
    body: bytes = BODY,
    now: float = NOW,
    keys: dict[str, AdminKey] | None = None,
    replay: ReplayCache | None = None,
) -> Verdict:
    keys = {KEY.kid: KEY} if keys is None else keys
    replay = ReplayCache() if replay is None else replay
    return verify(keys, method, path, headers, body_digest(body), now, replay)


def signed(key: AdminKey = KEY, *, ts: float = NOW, method: str = "POST") -> dict[str, str]:
    return sign(key, method, PATH, body_digest(BODY), ts)


def test_round_trip() -> None:
    assert check(signed()) == Accepted("ops")


def test_headers_and_canonical_string_match_the_documented_format() -> None:
    headers = signed()
    assert headers[HEADER_KEY_ID] == "ops"
    assert headers[HEADER_TIMESTAMP] == "1700000000"
    text = f"EDGECDN-HMAC-SHA256\nops\nPOST\n{PATH}\n1700000000\n{body_digest(BODY)}"
    assert canonical_string("ops", "post", PATH, "1700000000", body_digest(BODY)) == text
    expected = hmac.new(KEY.secret, text.encode(), hashlib.sha256).hexdigest()
    assert headers[HEADER_SIGNATURE] == expected


def test_timestamp_is_whole_seconds() -> None:
    assert sign(KEY, "POST", PATH, EMPTY_BODY_SHA256, NOW + 0.9)[HEADER_TIMESTAMP] == "1700000000"


def test_header_names_are_case_insensitive() -> None:
    assert check({k.lower(): v for k, v in signed().items()}).ok


def test_streamed_digest_equals_whole_digest() -> None:
    hasher = body_hasher()
    for i in range(0, len(BODY), 3):
        hasher.update(BODY[i : i + 3])
    assert hasher.hexdigest() == body_digest(BODY) == hashlib.sha256(BODY).hexdigest()
    assert body_digest(b"") == EMPTY_BODY_SHA256


@pytest.mark.parametrize(
    ("change", "reason"),
    [
        pytest.param({"method": "PUT"}, Reason.BAD_SIGNATURE, id="tampered-method"),
        pytest.param({"path": "/_edge/purge?soft=0"}, Reason.BAD_SIGNATURE, id="tampered-query"),
        pytest.param({"path": "/_edge/purge"}, Reason.BAD_SIGNATURE, id="tampered-path"),
        pytest.param({"body": b'{"urls": ["/"]}'}, Reason.BAD_SIGNATURE, id="tampered-body"),
        pytest.param({"now": NOW + 301}, Reason.EXPIRED, id="ts-too-old"),
        pytest.param({"now": NOW - 301}, Reason.EXPIRED, id="ts-too-far-ahead"),
        pytest.param({"keys": {OTHER.kid: OTHER}}, Reason.UNKNOWN_KEY, id="unknown-kid"),
        pytest.param({"keys": {"ops": AdminKey("ops", b"x" * 32)}}, Reason.BAD_SIGNATURE, id="wrong-secret"),
    ],
)
def test_rejections(change: dict[str, Any], reason: Reason) -> None:
    verdict = check(signed(), **change)
    assert verdict == Rejected(reason)
    assert not verdict.ok


@pytest.mark.parametrize("skew", [-300, 300], ids=["window-edge-ahead", "window-edge-behind"])
def test_window_edges_are_inclusive(skew: int) -> None:
    assert check(signed(), now=NOW + skew).ok


def test_replay_of_identical_request_is_refused() -> None:
    replay = ReplayCache()
    headers = signed()
    assert check(headers, replay=replay).ok
    assert check(headers, replay=replay, now=NOW + 10) == Rejected(Reason.REPLAYED)
    assert check(signed(ts=NOW + 1), replay=replay, now=NOW + 10).ok


def test_safe_methods_are_not_replay_checked() -> None:
    replay = ReplayCache()
    headers = signed(method="GET")
    assert check(headers, method="GET", replay=replay).ok
    assert check(headers, method="GET", replay=replay).ok
    assert len(replay) == 0


def test_a_forged_request_does_not_enter_the_replay_cache() -> None:
    replay = ReplayCache()
    forged = signed() | {HEADER_SIGNATURE: "0" * 64}
    assert check(forged, replay=replay) == Rejected(Reason.BAD_SIGNATURE)
    assert len(replay) == 0


def test_missing_headers() -> None:
    assert check({}) == Rejected(Reason.MISSING)
    assert check({"Authorization": "Bearer x"}) == Rejected(Reason.MISSING)


@pytest.mark.parametrize(
    "change",
    [
        pytest.param({HEADER_SIGNATURE: None}, id="signature-absent"),
        pytest.param({HEADER_TIMESTAMP: None}, id="timestamp-absent"),
        pytest.param({HEADER_KEY_ID: None}, id="kid-absent"),
        pytest.param({HEADER_TIMESTAMP: "1700000000.5"}, id="ts-fraction"),
        pytest.param({HEADER_TIMESTAMP: "-1"}, id="ts-negative"),
        pytest.param({HEADER_TIMESTAMP: " 1700000000"}, id="ts-space"),
        pytest.param({HEADER_TIMESTAMP: "9" * 40}, id="ts-huge"),
        pytest.param({HEADER_SIGNATURE: "ab"}, id="sig-short"),
        pytest.param({HEADER_SIGNATURE: "z" * 64}, id="sig-not-hex"),
        pytest.param({HEADER_KEY_ID: "ops!"}, id="kid-bad-char"),
        pytest.param({HEADER_KEY_ID: "k" * 33}, id="kid-too-long"),
    ],
)
def test_malformed(change: dict[str, str | None]) -> None:
    headers = signed()
    for name, value in change.items():
        if value is None:
            del headers[name]
        else:
            headers[name] = value
    assert check(headers) == Rejected(Reason.MALFORMED)


def test_uppercase_signature_is_malformed_so_it_cannot_dodge_the_replay_cache() -> None:
    headers = signed()
    headers[HEADER_SIGNATURE] = headers[HEADER_SIGNATURE].upper()
    assert check(headers) == Rejected(Reason.MALFORMED)


def test_multidict_headers_as_the_edge_passes_them() -> None:
    headers = CIMultiDict(signed())
    assert check(headers).ok
    headers.add("x-edge-timestamp", "1700000001")
    assert check(headers) == Rejected(Reason.MALFORMED)


def test_control_characters_in_path_are_malformed() -> None:
    assert check(signed(), path="/_edge/purge\nPOST") == Rejected(Reason.MALFORMED)
    with pytest.raises(ValueError):
        sign(KEY, "POST", "/a b", EMPTY_BODY_SHA256, NOW)
    with pytest.raises(ValueError):
        sign(KEY, "POST", "/a", "not-a-digest", NOW)


def test_key_rotation_either_key_verifies() -> None:
    keys = {KEY.kid: KEY, OTHER.kid: OTHER}
    replay = ReplayCache()
    assert check(signed(KEY), keys=keys, replay=replay) == Accepted("ops")
    assert check(signed(OTHER), keys=keys, replay=replay) == Accepted("ops2")


def test_signature_cannot_be_relabelled_to_another_kid_with_the_same_secret() -> None:
    twin = AdminKey("twin", KEY.secret)
    headers = signed() | {HEADER_KEY_ID: "twin"}
    assert check(headers, keys={"twin": twin}) == Rejected(Reason.BAD_SIGNATURE)


def test_reason_status() -> None:
    assert Reason.BAD_SIGNATURE.status == 401
    assert Reason.OVERLOADED.status == 503


def test_generate_and_parse_key_round_trip() -> None:
    text = generate_key("deploy-2024")
    key = parse_key(text)
    assert key.kid == "deploy-2024"
    assert len(key.secret) == 32
    assert format_key(key) == text
    assert parse_key(generate_key()).kid.startswith("k")
    assert generate_key("a") != generate_key("a")


def test_secret_stays_out_of_repr() -> None:
    assert repr(KEY) == "AdminKey(kid='ops')"


def test_parse_key_strips_surrounding_whitespace() -> None:
    text = generate_key("ops")
    assert parse_key(f"  {text}\n") == parse_key(text)


SECRET = base64.urlsafe_b64encode(b"s" * 32).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("", id="empty"),
        pytest.param(SECRET, id="no-colon"),
        pytest.param(f":{SECRET}", id="empty-kid"),
        pytest.param(f"{'k' * 33}:{SECRET}", id="kid-too-long"),
        pytest.param(f"o ps:{SECRET}", id="kid-space"),
        pytest.param("ops:", id="empty-secret"),
        pytest.param(f"ops:{SECRET}=", id="padded"),
        pytest.param(f"ops:{SECRET[:-1]}", id="31-bytes"),
        pytest.param(f"ops:{SECRET}AAAA", id="too-long"),
        pytest.param(f"ops:{SECRET[:-1]}+", id="standard-base64"),
        pytest.param(f"ops:{SECRET[:-1]}t", id="non-canonical-tail-bits"),
    ],
)
def test_parse_key_errors(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_key(text)
    message = str(info.value)
    assert "\n" not in message
    assert SECRET not in message


def test_generate_key_refuses_bad_kid() -> None:
    with pytest.raises(UsageError):
        generate_key("no/slash")


def test_parse_keys_refuses_duplicate_kid() -> None:
    ring = parse_keys([generate_key("a"), generate_key("b")])
    assert sorted(ring) == ["a", "b"]
    with pytest.raises(UsageError, match="twice"):
        parse_keys([generate_key("a"), generate_key("a")])


def test_replay_cache_forgets_after_the_window() -> None:
    cache = ReplayCache(window_s=300)
    assert cache.check_and_add("s1", NOW, NOW)
    assert not cache.check_and_add("s1", NOW, NOW + 300)
    assert cache.check_and_add("s1", NOW, NOW + 301)  # would be EXPIRED before reaching the cache


def test_replay_cache_keeps_future_timestamps_long_enough() -> None:
    cache = ReplayCache(window_s=300)
    assert cache.check_and_add("ahead", NOW + 300, NOW)
    assert not cache.check_and_add("ahead", NOW + 300, NOW + 599)


def test_replay_cache_is_bounded_and_refuses_when_full() -> None:
    cache = ReplayCache(window_s=300, max_entries=3)
    assert all(cache.check_and_add(f"s{i}", NOW, NOW) for i in range(3))
    assert not cache.check_and_add("s3", NOW, NOW)
    assert len(cache) == 3
    assert "s3" not in cache
    assert cache.check_and_add("s3", NOW + 1, NOW + 301)  # the old three expired
    assert len(cache) == 1


def test_full_replay_cache_answers_overloaded_not_replayed() -> None:
    replay = ReplayCache(max_entries=1)
    assert check(signed(), replay=replay).ok
    assert check(signed(ts=NOW + 1), replay=replay) == Rejected(Reason.OVERLOADED)


def test_verify_refuses_a_replay_cache_shorter_than_the_window() -> None:
    with pytest.raises(ValueError):
        verify({}, "POST", PATH, {}, EMPTY_BODY_SHA256, NOW, ReplayCache(window_s=10))
