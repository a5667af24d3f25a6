"""Starting, pinning, watching and stopping the processes the bench runs.

Rules of this file: every process it starts is stopped by its pid (or the process group it was
given); nothing listens or connects outside 127.0.0.1; servers run on core 0, load on core 1.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench_error import BenchError

REPO = Path(__file__).resolve().parent.parent
SERVER_CORE = "0"
CLIENT_CORE = "1"
LOOPBACK = "127.0.0.1"
START_TIMEOUT_S = 30.0


@dataclass
class Started:
    name: str
    proc: subprocess.Popen[bytes]
    log: Path


class Processes:
    """Every long-running process the bench starts; stop_all() ends them by pid / own group."""

    def __init__(self) -> None:
        self.started: list[Started] = []

    def start(self, name: str, argv: list[str], log: Path, cwd: Path) -> Started:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
            )
        started = Started(name, proc, log)
        self.started.append(started)
        return started

    def stop(self, started: Started) -> None:
        stop_process(started.proc)
        self.started.remove(started)

    def stop_all(self) -> None:
        for s in reversed(self.started):
            stop_process(s.proc)
        self.started.clear()


def stop_process(proc: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM by pid, SIGKILL after the grace time, then sweep the group it leads (workers)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def pinned(core: str, nice: int, *argv: str) -> list[str]:
    """argv run on one core, at the given nice level (0 = unchanged)."""
    prefix = ["nice", "-n", str(nice)] if nice else []
    return [*prefix, "taskset", "-c", core, *argv]


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:]) or "(empty log)"


def wait_for_listen_line(started: Started, pattern: re.Pattern[str]) -> str:
    """Poll the process log for its 'listening on URL' line; the URL must be on 127.0.0.1."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        m = pattern.search(started.log.read_text(errors="replace"))
        if m:
            url = m.group(1)
            if not url.startswith(f"http://{LOOPBACK}:"):
                raise BenchError(f"{started.name} listens on {url}, not on {LOOPBACK}")
            return url
        if started.proc.poll() is not None:
            raise BenchError(
                f"{started.name} exited with code {started.proc.returncode} before listening:\n"
                + log_tail(started.log)
            )
        time.sleep(0.05)
    raise BenchError(
        f"{started.name} did not print its listening line in {START_TIMEOUT_S:.0f} s:\n"
        + log_tail(started.log)
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def wait_for_port(started: Started, port: int) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if started.proc.poll() is not None:
            raise BenchError(
                f"{started.name} exited with code {started.proc.returncode}:\n" + log_tail(started.log)
            )
        with contextlib.suppress(OSError), socket.create_connection((LOOPBACK, port), timeout=1):
            return
        time.sleep(0.05)
    raise BenchError(f"{started.name} is not accepting on {LOOPBACK}:{port}")
