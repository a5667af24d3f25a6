"""The origin client: one aiohttp session, three timeouts, and aiohttp errors translated once into ours.

Rules of this file: redirects are never followed and bodies are never decompressed (stored as sent);
every exception that leaves this module is an OriginError carrying its status and retryability.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp

from edgecdn.config import OriginConfig
from edgecdn.errors import OriginBodyError, OriginConnectError, OriginError, OriginTimeout
from edgecdn.http.fields import Headers, end_to_end

# Request fields never sent upstream on a cache fill: the edge asks for the whole object itself.
FILL_DROP = frozenset(
    {
        "host",
        "range",
        "if-range",
        "if-match",
        "if-none-match",
        "if-modified-since",
        "if-unmodified-since",
        "expect",
        "content-length",
    }
)
VIA = "1.1 edgecdn"


@dataclass(slots=True)
class OriginResponse:
    status: int
    headers: Headers
    raw: aiohttp.ClientResponse
    origin: str = ""
    on_done: Callable[[], None] | None = field(default=None, repr=False)  # the pool's connection count

    def release(self) -> None:
        self.raw.release()
        self._done()

    def abort(self) -> None:
        self.raw.close()
        self._done()

    def _done(self) -> None:
        done, self.on_done = self.on_done, None
        if done is not None:
            done()


class OriginClient:
    def __init__(self, cfg: OriginConfig) -> None:
        self.cfg = cfg
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.cfg.max_connections, ttl_dns_cache=60)
        self._session = aiohttp.ClientSession(
            connector=connector,
            auto_decompress=False,
            timeout=aiohttp.ClientTimeout(
                total=None,
                sock_connect=self.cfg.connect_timeout,
                sock_read=self.cfg.between_bytes_timeout,
            ),
            skip_auto_headers=("Accept-Encoding", "User-Agent", "Content-Type"),
            cookie_jar=aiohttp.DummyCookieJar(),
        )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def send(
        self,
        origin: str,
        method: str,
        target: str,
        headers: Headers,
        body: AsyncIterable[bytes] | None = None,
    ) -> OriginResponse:
        """Send one request and wait for the response head (bounded by first_byte_timeout)."""
        assert self._session is not None, "OriginClient.start() was not awaited"
        try:
            async with asyncio.timeout(self.cfg.first_byte_timeout):
                raw = await self._session.request(
                    method,
                    origin + target,
                    headers=list(headers),
                    data=body,
                    allow_redirects=False,
                    compress=None,
                )
        except TimeoutError:
            raise OriginTimeout(f"{origin}: no response head within {self.cfg.first_byte_timeout}s") from None
        except aiohttp.ClientConnectorError as e:
            raise OriginConnectError(f"{origin}: {e.os_error.strerror or e}") from None
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as e:
            raise OriginConnectError(f"{origin}: {e}") from None
        except aiohttp.ClientError as e:
            raise OriginError(f"{origin}: {e}") from None
        fields = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw.raw_headers)
        return OriginResponse(raw.status, fields, raw, origin)

    async def body(self, resp: OriginResponse) -> AsyncIterator[bytes]:
        """The response body as it arrives; a short, reset or idle body raises OriginBodyError."""
        content = resp.raw.content
        try:
            while True:
                chunk = await content.readany()
                if not chunk:
                    return
                yield chunk
        except (TimeoutError, aiohttp.ServerTimeoutError):
            raise OriginTimeout("origin body stalled longer than between_bytes_timeout") from None
        except (aiohttp.ClientPayloadError, aiohttp.ClientError, ConnectionError) as e:
            raise OriginBodyError(f"origin body broke off: {e}") from None


def upstream_headers(
    headers: Headers, *, client_ip: str | None, drop: frozenset[str] = frozenset()
) -> Headers:
    """The client's end-to-end fields for the origin, with Via and X-Forwarded-For added."""
    out = list(end_to_end(headers, drop=drop | {"host", "x-forwarded-for", "via"}))
    prior = [v for n, v in headers if n.lower() == "x-forwarded-for"]
    if client_ip:
        out.append(("X-Forwarded-For", ", ".join([*prior, client_ip])))
    prior_via = [v for n, v in headers if n.lower() == "via"]
    out.append(("Via", ", ".join([*prior_via, VIA])))
    return tuple(out)


def with_cdn_loop(headers: Headers, cdn_id: str) -> Headers:
    """RFC 8586: the CDN-Loop values already present, then this edge's id, as one field."""
    prior = [v for n, v in headers if n.lower() == "cdn-loop"]
    kept = tuple((n, v) for n, v in headers if n.lower() != "cdn-loop")
    return (*kept, ("CDN-Loop", ", ".join([*prior, cdn_id])))


def loop_detected(headers: Headers, cdn_id: str) -> bool:
    """True when a CDN-Loop field already names this edge (RFC 8586 §2); parameters are ignored."""
    for name, value in headers:
        if name.lower() != "cdn-loop":
            continue
        for member in value.split(","):
            if member.split(";", 1)[0].strip().lower() == cdn_id.lower():
                return True
    return False


def check_length(resp: OriginResponse, received: int) -> None:
    """A body shorter or longer than its Content-Length is broken and must not be stored."""
    for name, value in resp.headers:
        if name.lower() == "content-length" and value.strip().isdigit() and int(value) != received:
            raise OriginBodyError(f"origin body ended at {received} of {value} bytes")
