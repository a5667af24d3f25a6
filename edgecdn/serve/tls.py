"""TLS on the public listener: the server context (read at listener start) and the ALPN switch.

Rules of this file: the standard library's `ssl` with modern defaults only — TLS 1.2 and 1.3, forward-secret
AEAD suites for 1.2 in the server's order, no compression, no renegotiation; ALPN offers h2 and http/1.1,
and each connection is handed, after its handshake, to the framing its client chose. A certificate or key
that cannot be loaded is one ConfigError line.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Callable
from typing import cast

from edgecdn.errors import ConfigError

ALPN = ("h2", "http/1.1")
# TLS 1.2 suites: ECDHE key exchange with an AEAD cipher only (RFC 9113 §9.2.2 forbids the rest for h2).
CIPHERS_TLS12 = "ECDHE+AESGCM:ECDHE+CHACHA20"


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The listener's context from PEM files (a key with a passphrase is refused, never prompted for)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    ctx.set_ciphers(CIPHERS_TLS12)
    ctx.set_alpn_protocols(list(ALPN))
    for name, path in (("server.tls_cert", cert), ("server.tls_key", key)):
        try:
            with open(path, "rb"):
                pass
        except OSError as e:
            raise ConfigError(f"{name}: {path}: {(e.strerror or 'cannot read').lower()}") from None
    try:
        ctx.load_cert_chain(cert, key, password=_no_passphrase)
    except ssl.SSLError as e:
        reason = _REASONS.get(str(e.reason), "not a PEM certificate chain and its key")
        raise ConfigError(f"server.tls_cert, server.tls_key: {cert}, {key}: {reason}") from None
    except OSError as e:
        raise ConfigError(f"server.tls_cert, server.tls_key: {e.strerror or e}") from None
    return ctx


_REASONS = {"KEY_VALUES_MISMATCH": "the key does not match the certificate"}


def _no_passphrase() -> bytes:
    raise ConfigError("server.tls_key: the key is encrypted (give it without a passphrase)")


class AlpnSwitch(asyncio.Protocol):
    """Created per accepted TLS connection; after the handshake it installs the framing ALPN chose."""

    def __init__(self, http1: Callable[[], asyncio.Protocol], http2: Callable[[], asyncio.Protocol]) -> None:
        self._http1 = http1
        self._http2 = http2

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)
        tls = transport.get_extra_info("ssl_object")
        chosen = tls.selected_alpn_protocol() if tls is not None else None
        protocol = self._http2() if chosen == "h2" else self._http1()
        transport.set_protocol(protocol)
        protocol.connection_made(transport)
