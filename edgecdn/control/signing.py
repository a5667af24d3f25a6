"""Signed admin requests: HMAC-SHA256 over method, path, timestamp and body digest.

Rules of this file: no I/O, no clock reads (`now` is an argument), no aiohttp/asyncio, so the CLI,
the origin program and the edge share it. Secrets never appear in a message, a repr or a log line.

Wire format: three headers, chosen over one `Authorization` header so a signed request can still
carry its own `Authorization`, and so each field reads plainly in a capture:

    X-Edge-Key-Id:    <kid>                 [A-Za-z0-9_-]{1,32}
    X-Edge-Timestamp: <integer seconds>     decimal digits only, Unix time
    X-Edge-Signature: <64 lowercase hex>    HMAC-SHA256(secret, canonical string)

Canonical string (UTF-8, fields joined by "\\n", no trailing newline):

    EDGECDN-HMAC-SHA256
    <kid>
    <METHOD upper-cased>
    <path with query, exactly as sent on the request line, e.g. /_edge/purge?soft=1>
    <timestamp, the same digits as the header>
    <lowercase hex SHA-256 of the body; of b"" when there is none>

The prefix and the kid are signed too, so a signature cannot be re-labelled for another key or
scheme. No field may hold a control character or space, which keeps the string unambiguous. The
verifier hashes the body it actually received; a body swapped in transit fails as BAD_SIGNATURE.

Replays: a POST/PUT/DELETE signature is accepted once within the window (`ReplayCache`). The
timestamp has one-second resolution, so an identical mutation repeated within the same second is
REPLAYED; a client that means to repeat one waits for the next second. GET/HEAD are not
replay-checked.
"""

import base64
import binascii
import enum
import hashlib
import heapq
import hmac
import re
import secrets
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from edgecdn.errors import UsageError

SCHEME = "EDGECDN-HMAC-SHA256"
HEADER_KEY_ID = "X-Edge-Key-Id"
HEADER_TIMESTAMP = "X-Edge-Timestamp"
HEADER_SIGNATURE = "X-Edge-Signature"
SIGNED_HEADERS = (HEADER_KEY_ID, HEADER_TIMESTAMP, HEADER_SIGNATURE)
SAFE_METHODS = frozenset({"GET", "HEAD"})

DEFAULT_WINDOW_S = 300.0
DEFAULT_REPLAY_MAX_ENTRIES = 100_000
SECRET_BYTES = 32
EMPTY_BODY_SHA256 = hashlib.sha256(b"").hexdigest()

_KID_RE = re.compile(r"[A-Za-z0-9_-]{1,32}")
_SECRET_RE = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes in url-safe base64 without padding
_TS_RE = re.compile(r"[0-9]{1,12}")
_HEX64_RE = re.compile(r"[0-9a-f]{64}")
_METHOD_RE = re.compile(r"[A-Za-z]{1,16}")
_CONTROL_RE = re.compile(r"[\x00-\x20\x7f]")


@dataclass(frozen=True, slots=True)
class AdminKey:
    """One admin key; the secret stays out of repr so a logged key leaks nothing."""

    kid: str
    secret: bytes = field(repr=False)


def format_key(key: AdminKey) -> str:
    """The `KID:SECRET` text that `parse_key` reads back.

    A function rather than `__str__`, so an f-string in a log line cannot print a secret.
    """
    encoded = base64.urlsafe_b64encode(key.secret).rstrip(b"=").decode("ascii")
    return f"{key.kid}:{encoded}"


def generate_key(kid: str | None = None) -> str:
    """A new key as `KID:SECRET`; the default kid is random so rotated keys never collide."""
    kid = kid if kid is not None else "k" + secrets.token_hex(4)
    if not _KID_RE.fullmatch(kid):
        raise UsageError(f"key id {kid!r}: must be 1-32 characters of A-Z a-z 0-9 _ -")
    return format_key(AdminKey(kid, secrets.token_bytes(SECRET_BYTES)))


def parse_key(text: str) -> AdminKey:
    """Read `KID:SECRET`; the error names the kid at most, never any part of the secret."""
    kid, sep, encoded = text.strip().partition(":")
    if not sep:
        raise UsageError("admin key: expected KID:SECRET (make one with `edgecdn keygen`)")
    if not _KID_RE.fullmatch(kid):
        raise UsageError("admin key: the key id must be 1-32 characters of A-Z a-z 0-9 _ -")
    if not _SECRET_RE.fullmatch(encoded):
        raise UsageError(f"admin key {kid!r}: the secret must be 43 characters of url-safe base64 (32 bytes)")
    try:
        secret = base64.urlsafe_b64decode(encoded + "=")
    except (binascii.Error, ValueError):
        raise UsageError(f"admin key {kid!r}: the secret is not valid base64") from None
    key = AdminKey(kid, secret)
    if format_key(key) != f"{kid}:{encoded}":
        raise UsageError(f"admin key {kid!r}: the secret is not canonical base64")
    return key


def parse_keys(texts: Iterable[str]) -> dict[str, AdminKey]:
    """A key ring from several `KID:SECRET` texts; a repeated kid is refused, not overwritten."""
    ring: dict[str, AdminKey] = {}
    for text in texts:
        key = parse_key(text)
        if key.kid in ring:
            raise UsageError(f"admin key {key.kid!r}: key id given twice")
        ring[key.kid] = key
    return ring


class BodyHasher(Protocol):
    """What the edge feeds a streamed body into; `hashlib.sha256()` is one."""

    def update(self, data: bytes, /) -> None: ...

    def hexdigest(self) -> str: ...


def body_hasher() -> BodyHasher:
    """An incremental body digest, so a streamed body is verified without holding it whole."""
    return hashlib.sha256()


def body_digest(body: bytes) -> str:
    """Lowercase hex SHA-256 of a body held in memory."""
    return hashlib.sha256(body).hexdigest()


def canonical_string(kid: str, method: str, path: str, timestamp: str, body_sha256_hex: str) -> str:
    """The exact text that is signed (module header); exposed for other-language clients' tests."""
    return "\n".join((SCHEME, kid, method.upper(), path, timestamp, body_sha256_hex))


def _mac(key: AdminKey, method: str, path: str, timestamp: str, body_sha256_hex: str) -> str:
    text = canonical_string(key.kid, method, path, timestamp, body_sha256_hex)
    return hmac.new(key.secret, text.encode("utf-8"), hashlib.sha256).hexdigest()


def _valid_request_line(method: str, path: str) -> bool:
    if not _METHOD_RE.fullmatch(method):
        return False
    return path.startswith("/") and not _CONTROL_RE.search(path)


def sign(key: AdminKey, method: str, path: str, body_sha256_hex: str, now: float) -> dict[str, str]:
    """Headers to add to a request; `path` must be byte-for-byte what goes on the request line."""
    if not _valid_request_line(method, path):
        raise ValueError(f"cannot sign {method!r} {path!r}: bad method or path")
    if not _HEX64_RE.fullmatch(body_sha256_hex):
        raise ValueError("body_sha256_hex must be 64 lowercase hex digits")
    timestamp = str(int(now))
    return {
        HEADER_KEY_ID: key.kid,
        HEADER_TIMESTAMP: timestamp,
        HEADER_SIGNATURE: _mac(key, method, path, timestamp, body_sha256_hex),
    }


class Reason(enum.Enum):
    """Why a signed request was refused; `status` is the HTTP answer."""

    MISSING = "missing"  # none of the three headers
    MALFORMED = "malformed"  # some headers, or values of the wrong shape, or repeated headers
    UNKNOWN_KEY = "unknown-key"
    EXPIRED = "expired"  # timestamp outside now ± window (either direction)
    BAD_SIGNATURE = "bad-signature"
    REPLAYED = "replayed"
    OVERLOADED = "overloaded"  # replay cache full: refused rather than remembered unboundedly

    @property
    def status(self) -> int:
        """401 for every authentication failure; 503 when the edge itself is out of room."""
        return 503 if self is Reason.OVERLOADED else 401


@dataclass(frozen=True, slots=True)
class Accepted:
    kid: str
    ok: bool = field(default=True, init=False)


@dataclass(frozen=True, slots=True)
class Rejected:
    reason: Reason
    ok: bool = field(default=False, init=False)


Verdict = Accepted | Rejected


class ReplayCache:
    """Signatures accepted within the window, so each signed request is honoured once.

    Entries leave once their timestamp is outside the window (the request would be EXPIRED anyway).
    At `max_entries` live entries new requests are refused (OVERLOADED) rather than growing memory
    or evicting a live entry, which would reopen a replay. Only requests with a valid HMAC get here,
    so filling it takes a key; 100 000 per 300 s is ~330 signed requests/s, far above admin use.
    """

    def __init__(
        self, window_s: float = DEFAULT_WINDOW_S, max_entries: int = DEFAULT_REPLAY_MAX_ENTRIES
    ) -> None:
        if window_s <= 0 or max_entries <= 0:
            raise ValueError("window_s and max_entries must be > 0")
        self.window_s = window_s
        self.max_entries = max_entries
        self._seen: set[str] = set()
        self._expiry: list[tuple[float, str]] = []  # min-heap of (ts + window, signature)

    def __len__(self) -> int:
        return len(self._seen)

    def __contains__(self, sig: object) -> bool:
        return sig in self._seen

    def expire(self, now: float) -> None:
        """Forget signatures whose timestamp has left the window."""
        while self._expiry and self._expiry[0][0] < now:
            _, sig = heapq.heappop(self._expiry)
            self._seen.discard(sig)

    def check_and_add(self, sig: str, ts: float, now: float) -> bool:
        """True if `sig` is new and now remembered; False if seen before or the cache is full."""
        self.expire(now)
        if sig in self._seen or len(self._seen) >= self.max_entries:
            return False
        self._seen.add(sig)
        heapq.heappush(self._expiry, (ts + self.window_s, sig))
        return True


def _signed_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    """Our three headers, matched case-insensitively; None if any of them is repeated."""
    wanted = {name.lower(): name for name in SIGNED_HEADERS}
    found: dict[str, str] = {}
    for name, value in headers.items():
        canonical = wanted.get(name.lower())
        if canonical is None:
            continue
        if canonical in found:
            return None
        found[canonical] = value
    return found


def verify(
    keys: Mapping[str, AdminKey],
    method: str,
    path: str,
    headers: Mapping[str, str],
    body_sha256_hex: str,
    now: float,
    replay: ReplayCache,
    window_s: float = DEFAULT_WINDOW_S,
) -> Verdict:
    """Check a signed request; `body_sha256_hex` is the digest of the body the caller received.

    Order: shape, key, window, HMAC, replay, so only authentic requests occupy the replay cache.
    GET/HEAD skip the replay check: repeating a read changes nothing, and a poller asking twice in
    one second would otherwise send the very same signature and be refused.
    """
    if replay.window_s < window_s:
        raise ValueError("the replay cache must remember at least as long as the window")
    found = _signed_headers(headers)
    if found is None:
        return Rejected(Reason.MALFORMED)
    if not found:
        return Rejected(Reason.MISSING)
    kid = found.get(HEADER_KEY_ID, "")
    timestamp = found.get(HEADER_TIMESTAMP, "")
    signature = found.get(HEADER_SIGNATURE, "")
    if not (
        _KID_RE.fullmatch(kid)
        and _TS_RE.fullmatch(timestamp)
        and _HEX64_RE.fullmatch(signature)
        and _HEX64_RE.fullmatch(body_sha256_hex)
        and _valid_request_line(method, path)
    ):
        return Rejected(Reason.MALFORMED)
    key = keys.get(kid)
    if key is None:
        return Rejected(Reason.UNKNOWN_KEY)
    ts = int(timestamp)
    if abs(now - ts) > window_s:
        return Rejected(Reason.EXPIRED)
    expected = _mac(key, method, path, timestamp, body_sha256_hex)
    if not hmac.compare_digest(expected, signature):
        return Rejected(Reason.BAD_SIGNATURE)
    if method.upper() not in SAFE_METHODS and not replay.check_and_add(signature, ts, now):
        return Rejected(Reason.REPLAYED if signature in replay else Reason.OVERLOADED)
    return Accepted(kid)
