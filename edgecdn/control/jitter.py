"""Jittered client downloads: how long a client waits before fetching an object (`GET /_edge/jitter`).

Rules of this file: no I/O and no clock reads (`now` is an argument); the delay is a hash of (client,
object, release window) spread uniformly over the window of the first matching path rule, so a client
asking again in the same window gets the same answer and many clients spread evenly.
"""

from __future__ import annotations

import secrets
from typing import Any

import xxhash

from edgecdn.config import JitterConfig
from edgecdn.control.purge import BadPurge, url_key

MAX_URL_CHARS = 8192
MAX_CLIENT_CHARS = 256


def window_for(path: str, cfg: JitterConfig) -> float:
    """The window (seconds) of the first rule whose prefix the path starts with, else the default."""
    for rule in cfg.rules:
        if path.startswith(rule.prefix):
            return rule.window
    return cfg.window


def delay_ms(client: str, url: str, window_ms: int, *, now: float) -> int:
    """Deterministic per (client, url, release window), uniform over [0, window_ms).

    The release window is the window-long slice of time `now` falls in: a retry in the same slice keeps
    its place, the next release reshuffles the order so no client is always last.
    """
    if window_ms <= 0:
        return 0
    release = int(now * 1000) // window_ms
    digest = xxhash.xxh3_64_intdigest(f"{client}\x00{url}\x00{release}".encode("utf-8", "surrogateescape"))
    return digest % window_ms  # 2**64 over any window: the modulo bias is below 1e-9


def answer(
    cfg: JitterConfig, url: str | None, client: str | None, *, now: float
) -> tuple[int, dict[str, Any]]:
    """(200, {"url", "delay_ms", "not_before", "window_ms"}) or (400, {"error", "detail"})."""
    if not url or len(url) > MAX_URL_CHARS:
        return 400, {
            "error": "bad jitter request",
            "detail": "expected ?url=/path (and optionally &client=ID)",
        }
    try:
        key = url_key(url)
    except BadPurge:
        return 400, {"error": "bad jitter request", "detail": "url: expected an absolute path or http(s) URL"}
    if client is not None and (
        not client or len(client) > MAX_CLIENT_CHARS or any(c < " " or c == "\x7f" for c in client)
    ):
        return 400, {
            "error": "bad jitter request",
            "detail": f"client: 1 to {MAX_CLIENT_CHARS} printable characters",
        }
    window_ms = int(window_for(key.partition("?")[0], cfg) * 1000)
    wait = delay_ms(client if client is not None else secrets.token_hex(16), key, window_ms, now=now)
    return 200, {"url": key, "delay_ms": wait, "not_before": int(now * 1000) + wait, "window_ms": window_ms}
