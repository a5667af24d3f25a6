"""Signed client URLs: what verifies, what is refused and why, and what the edge keys by."""

from __future__ import annotations

import pytest

from edgecdn.control.signing import parse_key
from edgecdn.control.urlsign import Invalid, Reason, Valid, sign_url, strip_params, verify_url

KEY = parse_key("k1:" + "A" * 43)
OTHER = parse_key("k2:" + "B" * 42 + "E")
RING = {"k1": KEY}
NOW = 1_800_000_000


def test_a_signed_url_verifies_to_the_target_without_auth_params() -> None:
    url = sign_url(KEY, "/v/a.bin?q=1", NOW + 60)
    assert verify_url(RING, url, now=NOW) == Valid("/v/a.bin?q=1")
    assert verify_url(RING, sign_url(KEY, "/v/a.bin", NOW), now=NOW) == Valid("/v/a.bin")


REFUSED = [
    ("unsigned", "/v/a.bin?q=1", Reason.MISSING),
    ("expired", sign_url(KEY, "/v/a.bin", NOW - 1), Reason.EXPIRED),
    ("unknown-kid", sign_url(OTHER, "/v/a.bin", NOW + 60), Reason.UNKNOWN_KEY),
    ("path-changed", sign_url(KEY, "/v/a.bin", NOW + 60).replace("a.bin", "b.bin"), Reason.BAD_SIGNATURE),
    (
        "expiry-extended",
        sign_url(KEY, "/v/a.bin", NOW + 60).replace(str(NOW + 60), str(NOW + 9999)),
        Reason.BAD_SIGNATURE,
    ),
    ("param-added", sign_url(KEY, "/v/a.bin", NOW + 60).replace("?", "?x=1&"), Reason.BAD_SIGNATURE),
    ("sig-not-hex", "/v/a.bin?expires=1&kid=k1&sig=zz", Reason.MALFORMED),
    ("expires-twice", "/v/a.bin?expires=1&expires=2&kid=k1&sig=" + "0" * 64, Reason.MALFORMED),
]


@pytest.mark.parametrize(("url", "reason"), [r[1:] for r in REFUSED], ids=[r[0] for r in REFUSED])
def test_refused_urls_say_why(url: str, reason: Reason) -> None:
    assert verify_url(RING, url, now=NOW) == Invalid(reason)


def test_strip_params_keeps_the_rest_raw_and_in_order() -> None:
    assert strip_params("/a?b=%20&token=x&c=1", ("token",)) == "/a?b=%20&c=1"
    assert strip_params("/a?token=x", ("token",)) == "/a"
    assert strip_params("/a", ("token",)) == "/a"


def test_sign_url_command_prints_a_url_the_edge_accepts(capsys: pytest.CaptureFixture[str]) -> None:
    from edgecdn.cli import main

    assert main(["sign-url", "/v/a.bin?q=1", "--key", "k1:" + "A" * 43, "--ttl", "10m"]) == 0
    url = capsys.readouterr().out.strip()
    expires = int(url.split("expires=")[1].split("&")[0])
    assert verify_url(RING, url, now=expires - 1) == Valid("/v/a.bin?q=1")
    assert main(["sign-url", "no-slash", "--key", "k1:" + "A" * 43]) == 2
