"""Where the plain-HTTP redirect listener sends a client (its host, the TLS port, its target as sent), and the
TLS settings checked together."""

from __future__ import annotations

import dataclasses
import re

import pytest

from edgecdn.config import Config, validate
from edgecdn.errors import ConfigError
from edgecdn.serve.redirect import location


@pytest.mark.parametrize(
    ("host", "port", "want"),
    [
        ("example.com", 443, "https://example.com/p?q=1"),
        ("example.com:80", 8443, "https://example.com:8443/p?q=1"),
        ("[::1]:8080", 443, "https://[::1]/p?q=1"),
        ("[::1]", 8443, "https://[::1]:8443/p?q=1"),
        ("", 443, None),
        (":80", 443, None),
    ],
)
def test_location(host: str, port: int, want: str | None) -> None:
    assert location(host, "/p?q=1", port) == want


@pytest.mark.parametrize(
    ("server", "message"),
    [
        ({"tls_cert": "c.pem"}, "server.tls_cert, server.tls_key: give both or neither"),
        ({"redirect_listen": "127.0.0.1:8079"}, "server.redirect_listen: needs server.tls_cert"),
        (
            {"tls_cert": "c.pem", "tls_key": "k.pem", "redirect_listen": "127.0.0.1:8080"},
            "server.redirect_listen: must differ",
        ),
    ],
)
def test_tls_settings_are_checked_together(server: dict[str, str], message: str) -> None:
    cfg = Config()
    cfg = dataclasses.replace(cfg, server=dataclasses.replace(cfg.server, **server))
    with pytest.raises(ConfigError, match=re.escape(message)):
        validate(cfg)
