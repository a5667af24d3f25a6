"""A small async HTTP client for integration tests: what the client received, as plain values."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
from multidict import CIMultiDictProxy

from tests.integration.conftest import HOOK_FIELDS, REPO, OriginClient, Proc

ADMIN = re.compile(r"\(admin (http://\S+)\)")


@dataclass
class Got:
    status: int
    headers: CIMultiDictProxy[str]
    body: bytes

    @property
    def x_cache(self) -> str:
        return self.headers.get("X-Cache", "")


def start_edge(origin_url: str, cache: Path, *extra: str) -> Proc:
    """`edgecdn serve` in front of `origin_url`, both listeners on ephemeral loopback ports."""
    return Proc(
        "edgecdn",
        "serve",
        "--origin",
        origin_url,
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--cache-dir",
        str(cache),
        *HOOK_FIELDS,
        *extra,
    )


@contextlib.contextmanager
def origin_and_edge(tmp: Path, config_toml: str, *extra: str) -> Iterator[tuple[OriginClient, Proc, str]]:
    """A test origin (root `tmp/root`) and one edge configured by `config_toml`: (origin, edge, admin URL)."""
    for sub in ("root", "cache"):
        (tmp / sub).mkdir(parents=True, exist_ok=True)
    (tmp / "edge.toml").write_text(config_toml)
    origin_proc = Proc("origin", "serve", str(tmp / "root"), "--listen", "127.0.0.1:0", "--test-hooks")
    try:
        edge = start_edge(origin_proc.url, tmp / "cache", "-c", str(tmp / "edge.toml"), *extra)
        try:
            yield OriginClient(origin_proc, tmp / "root"), edge, admin_url(edge)
        finally:
            edge.stop()
    finally:
        origin_proc.stop()


def run_module(module: str, *args: str, admin_key: str | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m MODULE ARGS…` to completion, as a user runs a command (admin key only if given)."""
    env = dict(os.environ, COLUMNS="200")
    env.pop("EDGECDN_ADMIN_KEY", None)
    if admin_key is not None:
        env["EDGECDN_ADMIN_KEY"] = admin_key
    return subprocess.run(
        [sys.executable, "-m", module, *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=60
    )


def admin_url(edge: Proc) -> str:
    for line in edge.stdout_lines:
        if m := ADMIN.search(line):
            return m.group(1)
    raise AssertionError(f"no admin URL in {edge.stdout_lines}")


def session() -> aiohttp.ClientSession:
    """No decompression, no proxies from the environment, no connection reuse surprises."""
    return aiohttp.ClientSession(
        auto_decompress=False,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=60),
        skip_auto_headers=("Accept-Encoding", "User-Agent"),
    )


async def fetch(s: aiohttp.ClientSession, method: str, url: str, **headers: str) -> Got:
    async with s.request(method, url, headers=headers, allow_redirects=False) as r:
        return Got(r.status, r.headers, await r.read())


async def get(s: aiohttp.ClientSession, url: str, **headers: str) -> Got:
    return await fetch(s, "GET", url, **headers)


async def metric(s: aiohttp.ClientSession, admin: str, name: str, **labels: str) -> float:
    """The sum of the samples of `name` from the edge's /metrics that carry these labels; 0 when absent."""
    async with s.get(admin + "/metrics") as r:
        text = await r.text()
    return metric_sum(text, name, **labels)


async def fills_stored(s: aiohttp.ClientSession, admin: str, at_least: float) -> None:
    """Wait (bounded, 5 s) until the edge has stored `at_least` fills in all: a client is answered before
    the disk index learns of its fill, so a test about what is stored waits for this first."""
    for _ in range(500):
        if await metric(s, admin, "edgecdn_fills_total", result="stored") >= at_least:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"fewer than {at_least:g} fills stored after 5 s")


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Sum of the samples of `name` in an exposition whose labels include `labels` (others summed over)."""
    want = {f'{k}="{v}"' for k, v in labels.items()}
    total = 0.0
    for line in text.splitlines():
        head, _, value = line.rpartition(" ")
        sample, _, tail = head.partition("{")
        if sample == name and want <= set(tail.rstrip("}").split(",") if tail else ()):
            total += float(value)
    return total
