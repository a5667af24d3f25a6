"""Harness for integration tests: real ``edgecdn`` / ``edgecdn-origin`` processes on 127.0.0.1.

Rules of this file: every process listens on port 0 and is ready only once it printed its
``listening on http://HOST:PORT`` line; every process is stopped by its pid at teardown, pass or fail.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import queue
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from multidict import CIMultiDict

REPO = Path(__file__).resolve().parents[2]
READY = re.compile(r"listening on (https?://\S+)")
READY_TIMEOUT_S = 15.0
STOP_TIMEOUT_S = 10.0
HERE = Path(__file__).resolve().parent
# Loopback only: never send test traffic through an http_proxy from the environment.
_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


# The test origin's hook fields (origin/hooks.py) reach it only when the edge forwards them on fills.
HOOK_FIELDS = (
    "--forward-header",
    "X-Test-*",
    "--forward-header",
    "X-Set-*",
    "--forward-header",
    "X-Remove-*",
)

_STARTED: list[Proc] = []  # every process any test started, stopped at the latest when the run ends


def pytest_sessionfinish(session: pytest.Session) -> None:
    """No process outlives the test run, even one whose test forgot (or never reached) its stop()."""
    for proc in reversed(_STARTED):
        if proc.returncode is None:
            proc.stop()


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.path)).resolve().parents:
            item.add_marker(pytest.mark.integration)


class Proc:
    """``python -m MODULE ARGS…`` started and waited for; ``.url`` is what it printed when ready."""

    def __init__(self, module: str, *args: str, timeout: float = READY_TIMEOUT_S) -> None:
        self.argv = [sys.executable, "-m", module, *args]
        self._stderr = tempfile.NamedTemporaryFile(  # noqa: SIM115 - kept open until stop()
            prefix=f"{module}-", suffix=".stderr", delete=False
        )
        self.stderr_path = Path(self._stderr.name)
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        self.popen = subprocess.Popen(
            self.argv,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env=env,
            text=True,
            start_new_session=True,  # its own process group: stray workers die with it
        )
        self.pid = self.popen.pid
        _STARTED.append(self)
        self.stdout_lines: list[str] = []
        self._ready: queue.Queue[str | None] = queue.Queue()
        self._drainer = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drainer.start()
        self.url = self._wait_ready(timeout)

    def _drain_stdout(self) -> None:
        assert self.popen.stdout is not None
        found = False
        for line in self.popen.stdout:
            self.stdout_lines.append(line.rstrip("\n"))
            if not found and (m := READY.search(line)):
                found = True
                self._ready.put(m.group(1))
        if not found:
            self._ready.put(None)

    def _wait_ready(self, timeout: float) -> str:
        try:
            url = self._ready.get(timeout=timeout)
        except queue.Empty:
            why = f"not ready after {timeout:.0f} s"
        else:
            if url is not None:
                return url
            why = f"exited with code {self.stop()} before it was ready"
        self.stop()
        pytest.fail(
            f"{' '.join(self.argv)}: {why}\n--- stdout ---\n"
            + "\n".join(self.stdout_lines)
            + f"\n--- stderr ---\n{self.stderr_text()}",
            pytrace=False,
        )

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def stderr_text(self) -> str:
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.popen.poll() is None:
            os.kill(self.pid, sig)

    def stop(self, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM, wait, then SIGKILL; returns the exit code (negative: killed by a signal).

        Whatever is left of its process group (workers it forked) is killed afterwards.
        """
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait()
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        self._drainer.join(timeout)
        if not self._drainer.is_alive() and self.popen.stdout is not None:
            self.popen.stdout.close()
        if not self._stderr.closed:
            self._stderr.close()
        return self.popen.returncode


class OriginClient:
    """A running ``edgecdn-origin --test-hooks`` and its /_test/ endpoints, called synchronously.

    In an async test, wrap blocking calls in ``asyncio.to_thread`` or use ``await_gate``.
    """

    def __init__(self, proc: Proc, root: Path) -> None:
        self.proc = proc
        self.url = proc.url
        self.root = root

    def _call(self, method: str, endpoint: str, **query: str) -> Any:
        url = self.url + endpoint + ("?" + urllib.parse.urlencode(query) if query else "")
        req = urllib.request.Request(url, method=method, data=b"" if method == "POST" else None)
        with _OPENER.open(req, timeout=10) as resp:
            return json.load(resp)

    def hits(self, path: str) -> int:
        """How many requests the origin saw for this target (path + query, as received)."""
        return int(self._call("GET", "/_test/hits", path=path)["hits"])

    def all_hits(self) -> dict[str, int]:
        return dict(self._call("GET", "/_test/hits")["hits"])

    def requests(self, path: str | None = None) -> list[dict[str, Any]]:
        """Requests seen (last 1000), oldest first; ``headers`` is case-insensitive."""
        entries = self._call("GET", "/_test/requests", **({} if path is None else {"path": path}))
        for entry in entries:
            entry["headers"] = CIMultiDict(entry["headers"])
        return list(entries)

    def gate_waiting(self, name: str) -> int:
        return int(self._call("GET", f"/_test/gates/{urllib.parse.quote(name, safe='')}")["waiting"])

    def wait_gate(self, name: str, n: int = 1, timeout: float = 10.0) -> None:
        """Block until at least n responses are held at gate ``name``."""
        deadline = time.monotonic() + timeout
        while (waiting := self.gate_waiting(name)) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"gate {name!r}: {waiting} waiting after {timeout} s, wanted {n}")
            time.sleep(0.01)

    async def await_gate(self, name: str, n: int = 1, timeout: float = 10.0) -> None:  # noqa: ASYNC109
        """wait_gate for async tests: lets the test's own requests run meanwhile."""
        deadline = time.monotonic() + timeout
        while (waiting := await asyncio.to_thread(self.gate_waiting, name)) < n:
            if time.monotonic() > deadline:
                pytest.fail(f"gate {name!r}: {waiting} waiting after {timeout} s, wanted {n}")
            await asyncio.sleep(0.01)

    def release(self, gate: str) -> None:
        self._call("POST", f"/_test/gates/{urllib.parse.quote(gate, safe='')}/release")

    def reset(self) -> None:
        self._call("POST", "/_test/reset")

    def stop(self) -> int:
        return self.proc.stop()


OriginFactory = Callable[..., OriginClient]
EdgeFactory = Callable[..., Proc]


@pytest.fixture
def origin_factory(tmp_path: Path) -> Iterator[OriginFactory]:
    """``origin_factory(root=None, *extra_args)`` starts one more origin; each gets its own root."""
    started: list[Proc] = []

    def start(root: Path | None = None, *extra: str) -> OriginClient:
        if root is None:
            root = tmp_path / f"origin-{len(started)}"
            root.mkdir()
        args = ["serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks", *extra]
        proc = Proc("origin", *args)
        started.append(proc)
        return OriginClient(proc, root)

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.stop()


@pytest.fixture
def origin(origin_factory: OriginFactory) -> OriginClient:
    """A running origin with test hooks, serving an empty ``origin.root`` the test may fill."""
    return origin_factory()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[EdgeFactory]:
    """``edge(origin_url, *extra_args, cache_dir=None)`` starts ``python -m edgecdn serve``."""
    started: list[Proc] = []

    def start(origin_url: str, *extra: str, cache_dir: Path | None = None) -> Proc:
        if cache_dir is None:
            cache_dir = tmp_path / f"edge-cache-{len(started)}"
        cache_dir.mkdir(parents=True, exist_ok=True)
        args = ["serve", "--origin", origin_url, "--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"]
        proc = Proc("edgecdn", *args, "--cache-dir", str(cache_dir), *HOOK_FIELDS, *extra)
        started.append(proc)
        return proc

    try:
        yield start
    finally:
        for proc in reversed(started):
            proc.stop()
