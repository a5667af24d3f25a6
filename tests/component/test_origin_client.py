"""The origin client's error translation (every aiohttp failure becomes one OriginError) and head checks."""

from __future__ import annotations

from typing import Any

import aiohttp
import pytest

from edgecdn.config import OriginConfig
from edgecdn.errors import OriginConnectError, OriginError, OriginTimeout
from edgecdn.fetch.client import OriginClient, malformed_head


class RaisingSession:
    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def request(self, *_a: Any, **_k: Any) -> Any:
        raise self.error


TRANSLATIONS = [
    (
        "closing-transport",
        aiohttp.ClientConnectionResetError("Cannot write to closing transport"),
        OriginConnectError,
    ),
    ("server-disconnected", aiohttp.ServerDisconnectedError(), OriginConnectError),
    ("connection-reset", ConnectionResetError(104, "Connection reset by peer"), OriginConnectError),
    ("broken-pipe", BrokenPipeError(32, "Broken pipe"), OriginConnectError),
    ("client-os-error", aiohttp.ClientOSError(104, "reset"), OriginConnectError),
    ("connection-error", aiohttp.ClientConnectionError("closed"), OriginConnectError),
    ("timeout", TimeoutError(), OriginTimeout),
    ("server-timeout", aiohttp.ServerTimeoutError("read"), OriginTimeout),
    ("bad-head", aiohttp.ClientResponseError(None, (), message="Invalid header value char"), OriginError),  # type: ignore[arg-type]
    ("payload", aiohttp.ClientPayloadError("bad"), OriginError),
]


@pytest.mark.parametrize(("error", "want"), [t[1:] for t in TRANSLATIONS], ids=[t[0] for t in TRANSLATIONS])
async def test_every_failure_before_the_head_is_translated_once(
    error: BaseException, want: type[OriginError]
) -> None:
    client = OriginClient(OriginConfig())
    client._session = RaisingSession(error)  # type: ignore[assignment]
    with pytest.raises(OriginError) as got:
        await client.send("http://a", "GET", "/x", ())
    assert type(got.value) is want
    assert got.value.retryable == (want is not OriginError)


@pytest.mark.parametrize(
    ("status", "fields", "bad"),
    [
        (200, (("Content-Length", "2"),), False),
        (599, (("Transfer-Encoding", "Chunked"),), False),
        (999, (), True),
        (99, (), True),
        (200, (("Transfer-Encoding", "chunked, identity"),), True),
        (200, (("Transfer-Encoding", "gzip, chunked"),), True),
        (200, (("Transfer-Encoding", "chunked"), ("Transfer-Encoding", "chunked")), True),
        (200, (("Content-Length", "2"), ("Content-Length", "3")), True),
        (200, (("Content-Length", "2"), ("Content-Length", "2")), False),
        (200, (("Content-Length", "-1"),), True),
        (200, (("X-A", "a\x00b"),), True),
        (200, (("X-A", "a\tb\x80"),), False),
    ],
)
def test_malformed_heads(status: int, fields: tuple[tuple[str, str], ...], bad: bool) -> None:
    assert (malformed_head(status, fields) is not None) == bad
