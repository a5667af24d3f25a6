"""Signed client URLs: `?…&expires=<unix>&kid=<kid>&sig=<hex>`, HMAC-SHA256 with rotating key ids.

Rules of this file: pure (`now` is an argument, no I/O); the query is handled as raw text, never decoded
and re-encoded, so what is signed is byte for byte what was sent. Secrets never appear in a message.

    signed text  = "EDGECDN-URL-HMAC-SHA256\\n" + the request target up to (not including) "&sig="
    sig          = lowercase hex HMAC-SHA256(secret of kid, signed text), the last query parameter

The verified target without `expires`, `kid` and `sig` is what the edge keys and forwards, so auth
parameters never enter the cache key and a re-signed URL hits the same object.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import re
from collections.abc import Mapping
from dataclasses import dataclass

from edgecdn.control.signing import AdminKey

SCHEME = "EDGECDN-URL-HMAC-SHA256"
AUTH_PARAMS = ("expires", "kid", "sig")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DIGITS = re.compile(r"[0-9]{1,12}")


class Reason(enum.Enum):
    MISSING = "signature-missing"
    MALFORMED = "signature-malformed"
    UNKNOWN_KEY = "signature-unknown-key"
    BAD_SIGNATURE = "signature-invalid"
    EXPIRED = "signature-expired"


@dataclass(frozen=True, slots=True)
class Valid:
    target: str  # the request target without the auth parameters


@dataclass(frozen=True, slots=True)
class Invalid:
    reason: Reason


def _mac(key: AdminKey, signed: str) -> str:
    return hmac.new(key.secret, f"{SCHEME}\n{signed}".encode(), hashlib.sha256).hexdigest()


def sign_url(key: AdminKey, target: str, expires: int) -> str:
    """`target` (path and optional query) with expires, kid and sig appended."""
    sep = "&" if "?" in target else "?"
    signed = f"{target}{sep}expires={expires}&kid={key.kid}"
    return f"{signed}&sig={_mac(key, signed)}"


def strip_params(target: str, names: tuple[str, ...]) -> str:
    """The target without the named query parameters, the others kept raw and in order."""
    path, sep, query = target.partition("?")
    if not sep:
        return target
    kept = [p for p in query.split("&") if p and p.partition("=")[0] not in names]
    return path + ("?" + "&".join(kept) if kept else "")


def verify_url(ring: Mapping[str, AdminKey], target: str, *, now: float) -> Valid | Invalid:
    """Check a signed target; the signature is compared in constant time, expiry after it."""
    signed, sep, sig = target.rpartition("&sig=")
    if not sep or "&" in sig:
        return Invalid(Reason.MISSING if "sig=" not in target else Reason.MALFORMED)
    params: dict[str, str] = {}
    for pair in signed.partition("?")[2].split("&"):
        name, _, value = pair.partition("=")
        if name in params and name in AUTH_PARAMS:
            return Invalid(Reason.MALFORMED)
        params[name] = value
    expires, kid = params.get("expires", ""), params.get("kid", "")
    if not _HEX64.fullmatch(sig) or not _DIGITS.fullmatch(expires) or not kid:
        return Invalid(Reason.MALFORMED)
    key = ring.get(kid)
    if key is None:
        return Invalid(Reason.UNKNOWN_KEY)
    if not hmac.compare_digest(_mac(key, signed), sig):
        return Invalid(Reason.BAD_SIGNATURE)
    if int(expires) < now:
        return Invalid(Reason.EXPIRED)
    return Valid(strip_params(target, AUTH_PARAMS))
