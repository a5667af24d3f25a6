"""What a request sends upstream: the forwarding model of THREAT_MODEL.md ("Request fields sent upstream")."""

import pytest

from edgecdn.fetch.client import fill_allow, sent_as_a_fill, upstream_headers
from edgecdn.http.fields import SPOOFABLE_FORWARDING, Allow, Headers

METHOD_OVERRIDE = {"x-http-method-override", "x-http-method", "x-method-override"}
HOSTILE = tuple((name, "evil.example") for name in sorted(SPOOFABLE_FORWARDING | METHOD_OVERRIDE))
CLIENT = (
    ("Host", "site.example"),
    ("Accept", "text/html"),
    ("Accept-Encoding", "gzip, deflate, br;q=0"),
    ("Accept-Language", "fr"),
    ("Cookie", "session=1"),
    ("User-Agent", "curl/8"),
    ("Authorization", "Bearer t"),
    ("Cache-Control", "no-cache"),
    ("Range", "bytes=0-0"),
    ("If-None-Match", '"x"'),
    ("X-Site", "a"),
    ("X-Test-Gate", "g"),
    ("Connection", "X-Site"),
    *HOSTILE,
)


def names(headers: tuple[tuple[str, str], ...]) -> list[str]:
    return [n.lower() for n, _ in headers]


def test_a_fill_forwards_only_the_allowlist_then_sets_its_own_forwarding_fields() -> None:
    out = upstream_headers(CLIENT, client_ip="192.0.2.7", allow=fill_allow(()))
    assert out == (
        ("Accept", "text/html"),
        ("Authorization", "Bearer t"),
        ("Accept-Encoding", "gzip"),
        ("X-Forwarded-For", "192.0.2.7"),
        ("Forwarded", "for=192.0.2.7"),
        ("Via", "evil.example, 1.1 edgecdn"),
    )


def test_operator_names_and_prefixes_are_forwarded_on_fills() -> None:
    out = upstream_headers(CLIENT, client_ip=None, allow=fill_allow(("x-test-*", "Accept-Language")))
    assert set(names(out)) == {
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "x-test-gate",
        "via",
    }


@pytest.mark.parametrize("hostile", sorted(SPOOFABLE_FORWARDING - {"via"}))
def test_pass_through_never_forwards_a_client_forwarding_field_as_sent(hostile: str) -> None:
    out = upstream_headers(CLIENT, client_ip="2001:db8::1", allow=None)
    assert all(v != "evil.example" for n, v in out if n.lower() == hostile)
    assert dict((n.lower(), v) for n, v in out)["forwarded"] == 'for="[2001:db8::1]"'


def test_pass_through_forwards_other_end_to_end_fields() -> None:
    out = names(upstream_headers(CLIENT, client_ip=None, allow=None))
    assert {"cookie", "user-agent", "range", "x-http-method-override", "x-test-gate"} <= set(out)
    assert "x-site" not in out and "host" not in out  # Connection-nominated; Host is the origin's own


def test_allow_prefix_and_case() -> None:
    allow = Allow.of(["X-Test-*", "Accept"])
    assert "x-test-gate" in allow and "ACCEPT" in allow and "accept-encoding" not in allow


@pytest.mark.parametrize(
    ("headers", "shared"),
    [
        pytest.param(
            (("Content-Type", "application/json"), ("Content-Length", "2")), True, id="body-framing"
        ),
        pytest.param((("Accept", "text/html"), ("Host", "a")), True, id="allowed-fields"),
        pytest.param((("Accept-Encoding", "gzip"),), True, id="accept-encoding-already-one-coding"),
        pytest.param((("Accept-Encoding", "deflate, gzip"),), False, id="accept-encoding-not-normalised"),
        pytest.param((("Cookie", "a=1"),), False, id="cookie-could-shape-the-answer"),
        pytest.param((("User-Agent", "x"),), False, id="user-agent-could-shape-the-answer"),
        pytest.param((("X-Forwarded-Host", "evil"),), True, id="spoofable-never-forwarded-anyway"),
    ],
)
def test_a_pass_through_answer_is_shared_only_if_sent_as_a_fill(headers: Headers, shared: bool) -> None:
    assert sent_as_a_fill(headers, fill_allow(())) is shared
