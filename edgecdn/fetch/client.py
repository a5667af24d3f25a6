"""The origin client: one aiohttp session, three timeouts, and aiohttp errors translated once into ours.

Rules of this file: redirects are never followed and bodies are never decompressed (stored as sent);
every exception that leaves this module is an OriginError carrying its status and retryability.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp

from edgecdn.config import OriginConfig
from edgecdn.errors import OriginBodyError, OriginConnectError, OriginError, OriginTimeout
from edgecdn.http.fields import (
    FILL_FORWARD,
    SPOOFABLE_FORWARDING,
    Allow,
    Headers,
    end_to_end,
    get_all,
)
from edgecdn.policy.key import accept_encoding

VIA = "1.1 edgecdn"
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")  # never in a field (RFC 9110 §5.5); HTAB is allowed


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
        except (aiohttp.ClientConnectionError, OSError) as e:
            # Reset, refused write, closed before the head: nothing was answered, so another origin may.
            raise OriginConnectError(f"{origin}: connection lost before the response head: {e}") from None
        except aiohttp.ClientResponseError as e:
            raise OriginError(f"{origin}: malformed response head: {e.message}") from None
        except aiohttp.ClientError as e:
            raise OriginError(f"{origin}: {e}") from None
        fields = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in raw.raw_headers)
        why = malformed_head(raw.status, fields)
        if why is not None:
            raw.close()
            raise OriginError(f"{origin}: malformed response head: {why}")
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


def upstream_headers(headers: Headers, *, client_ip: str | None, allow: Allow | None = None) -> Headers:
    """The client's fields for the origin, then X-Forwarded-For, Forwarded and Via set by the edge.

    With `allow` (a cacheable request, whose answer other clients get) only the allowed fields go, and
    Accept-Encoding as the one coding it is keyed by; without (pass-through) every end-to-end field goes.
    Fields that claim to describe the client's request (SPOOFABLE_FORWARDING) never go as sent.
    """
    out = [(n, v) for n, v in end_to_end(headers, drop=SPOOFABLE_FORWARDING) if allow is None or n in allow]
    if allow is not None and "accept-encoding" in allow:
        out = [(n, v) for n, v in out if n.lower() != "accept-encoding"]
        out.append(("Accept-Encoding", accept_encoding(get_all(headers, "accept-encoding"))))
    if client_ip:
        out.append(("X-Forwarded-For", client_ip))
        node = f'"[{client_ip}]"' if ":" in client_ip else client_ip
        out.append(("Forwarded", f"for={node}"))
    out.append(("Via", ", ".join([*get_all(headers, "via"), VIA])))
    return tuple(out)


# A request body's own framing, and the Host the origin never sees as sent: not about the answer's content.
BODY_FRAMING = frozenset({"content-type", "content-length", "transfer-encoding", "expect", "host"})


def sent_as_a_fill(headers: Headers, allow: Allow) -> bool:
    """Did a pass-through request carry only what a fill would have forwarded, so that its answer may be
    shared with other clients (a POST's answer adopted for GET, RFC 9110 §9.3.3)? Body framing aside,
    every field it forwarded is allowed, and Accept-Encoding is already the one coding it is keyed by."""
    for name, value in end_to_end(headers, drop=SPOOFABLE_FORWARDING | BODY_FRAMING):
        if name.lower() == "accept-encoding":
            if accept_encoding([value]) != value.strip().lower():
                return False
        elif name not in allow:
            return False
    return True


def fill_allow(extra: tuple[str, ...]) -> Allow:
    """The fields a fill forwards: FILL_FORWARD plus the operator's `origin.forward_headers` (and tokens)."""
    return Allow.of((*FILL_FORWARD, *extra))


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


def malformed_head(status: int, fields: Headers) -> str | None:
    """Why a response head that aiohttp parsed must still not be used (RFC 9112 §6.1, §6.3), or None.

    Its status is outside 100..599; Transfer-Encoding is anything but exactly `chunked` (aiohttp reads a
    body whose last coding is not chunked until close, raw chunk framing included); Content-Length
    values disagree or are not digits; or a field carries a control character.
    """
    if not 100 <= status <= 599:
        return f"status {status}"
    codings = [c.strip().lower() for v in get_all(fields, "transfer-encoding") for c in v.split(",")]
    if codings and codings != ["chunked"]:
        return f"Transfer-Encoding {', '.join(codings)!r}"
    lengths = {n.strip() for v in get_all(fields, "content-length") for n in v.split(",")}
    if len(lengths) > 1 or not all(v.isascii() and v.isdigit() for v in lengths):
        return f"Content-Length {sorted(lengths)!r}"
    for name, value in fields:
        if _CONTROL.search(name) or _CONTROL.search(value):
            return f"control character in {name[:40]!r}"
    return None


def status_error(status: int, origin: str = "") -> OriginError:
    """An origin answer that counts as a failure (a retry status, a 5xx fill) as an OriginError."""
    err = OriginError(f"{origin or 'origin'} answered {status}")
    err.status = status
    err.detail = f"origin-{status}"
    return err


def check_length(resp: OriginResponse, received: int) -> None:
    """A body shorter or longer than its Content-Length is broken and must not be stored."""
    for name, value in resp.headers:
        if name.lower() == "content-length" and value.strip().isdigit() and int(value) != received:
            raise OriginBodyError(f"origin body ended at {received} of {value} bytes")
