"""Readiness toward a load balancer: warm up before saying 200, say 503 "draining" before stopping.

Rules of this file: /_edge/health is what the balancer follows, so it turns 200 only once the warm-up is
done (or timed out) and turns 503 a full `drain_delay` before the listener stops accepting.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from edgecdn.config import ServerConfig
from edgecdn.errors import ConfigError
from edgecdn.serve import push

if TYPE_CHECKING:
    from edgecdn.serve.app import Edge

log = logging.getLogger("edgecdn")
MAX_MANIFEST_BYTES = 16 * 2**20
MAX_MANIFEST_URLS = 100_000
WARM_BATCH = 32  # URLs fetched at once: a joining edge must not stampede its origin


def read_manifest(path: str) -> list[str]:
    """The URLs of a prefetch manifest: text (one URL or path per line, # comments) or `edgecdn version`'s
    JSON. Request headers after a URL are ignored here."""
    key = "server.warm_from"
    try:
        raw = Path(path).read_bytes()[: MAX_MANIFEST_BYTES + 1]
    except OSError as e:
        raise ConfigError(f"{key}: {path}: {e.strerror or e}") from None
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ConfigError(f"{key}: {path}: larger than {MAX_MANIFEST_BYTES} bytes")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"{key}: {path}: not UTF-8") from None
    if text.lstrip().startswith("{"):
        try:
            files = json.loads(text)["files"]
            urls = ["/" + str(f["path"]).lstrip("/") for f in files.values()]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ConfigError(f"{key}: {path}: not an `edgecdn version` JSON manifest") from None
    else:
        lines = (line.split("#", 1)[0].split() for line in text.splitlines())
        urls = [words[0] for words in lines if words]
    if len(urls) > MAX_MANIFEST_URLS:
        raise ConfigError(f"{key}: {path}: more than {MAX_MANIFEST_URLS} URLs")
    return urls


def start_warming(edge: Edge, cfg: ServerConfig) -> asyncio.Task[None] | None:
    """With `warm_from`: health says 503 "warming" until the manifest is fetched (at most `warm_timeout`)."""
    if not cfg.warm_from:
        return None
    urls = read_manifest(cfg.warm_from)
    edge.ready, edge.unready = False, "warming"
    return asyncio.create_task(_warm(edge, urls, cfg.warm_timeout))


async def _warm(edge: Edge, urls: list[str], limit: float) -> None:
    stored = 0
    try:
        async with asyncio.timeout(limit):
            for i in range(0, len(urls), WARM_BATCH):
                results = await push.refetch(edge, urls[i : i + WARM_BATCH])
                stored += sum(r["state"] == "stored" for r in results)
    except TimeoutError:
        log.warning("warm-up: timed out after %.1f s; serving anyway", limit)
    except push.PushError as e:
        log.warning("warm-up: %s (%s); serving anyway", e.error, e.detail)
    log.info("warm-up: %d of %d URLs stored", stored, len(urls))
    if edge.unready == "warming":  # not once a SIGTERM started draining
        edge.ready = True


async def stop_warming(task: asyncio.Task[None] | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def drain(edge: Edge, delay: float) -> None:
    """Say 503 "draining" on /_edge/health for `delay` seconds while still serving, so the balancer's
    checks take this edge out before it stops accepting."""
    edge.ready, edge.unready = False, "draining"
    if delay > 0:
        log.info("draining: health says 503 for %.1f s before the listener closes", delay)
        await asyncio.sleep(delay)
