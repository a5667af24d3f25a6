"""What an operator installs: systemd units that verify, readiness over sd_notify, --version, clean metrics.

Rules of this file: a tool the test needs (systemd-analyze, promtool) fails the test in CI when missing
(.ci/run installs it) and skips it, loudly, elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgecdn.build_info import __version__
from tests.integration.conftest import REPO, OriginClient, Proc
from tests.integration.edge_client import admin_url, run_module, start_edge

UNITS = ("edgecdn.service", "edgecdn-origin.service")
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an http_proxy
BIN = Path(sys.executable).parent  # the venv's console scripts stand in for /usr/local/bin


def tool(name: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/bin/{name}", f"/usr/sbin/{name}") if os.access(p, os.X_OK)), None
    )
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is missing: .ci/run must install it")
        pytest.skip(f"{name} not installed (apt-get install it to run this test)")
    return path


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_verifies(unit: str, tmp_path: Path) -> None:
    analyze = tool("systemd-analyze")
    text = (REPO / "deploy" / unit).read_text().replace("/usr/local/bin/", f"{BIN}/")
    (tmp_path / unit).write_text(text)
    done = subprocess.run(
        [analyze, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60
    )
    # verify exits 0 on unknown keys and unparsable values, and only warns: read what it says of our unit.
    ours = [line for line in (done.stdout + done.stderr).splitlines() if unit in line]
    assert done.returncode == 0 and not ours, done.stdout + done.stderr


@pytest.mark.parametrize("module, prog", [("edgecdn", "edgecdn"), ("origin", "edgecdn-origin")])
def test_version_flag(module: str, prog: str) -> None:
    done = run_module(module, "--version")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"{prog} {__version__}"


def plain_origin(tmp_path: Path) -> OriginClient:
    """An origin without test hooks, as deployed."""
    root = tmp_path / "root"
    root.mkdir()
    return OriginClient(Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0"), root)


@pytest.fixture
def notify_socket(monkeypatch: pytest.MonkeyPatch) -> Iterator[socket.socket]:
    """A datagram socket standing in for systemd's; processes started meanwhile get its path."""
    with tempfile.TemporaryDirectory(prefix="notify-") as d:
        path = os.path.join(d, "notify.sock")
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        sock.bind(path)
        sock.settimeout(10)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        try:
            yield sock
        finally:
            sock.close()


def test_edge_and_origin_notify_ready_then_stopping(notify_socket: socket.socket, tmp_path: Path) -> None:
    origin = plain_origin(tmp_path)
    assert notify_socket.recv(256) == b"READY=1"  # the origin, once it listens
    edge = start_edge(origin.url, tmp_path / "cache")
    try:
        assert notify_socket.recv(256) == b"READY=1"
        assert edge.stop() == 0
        assert notify_socket.recv(256) == b"STOPPING=1"
        assert origin.stop() == 0
        assert notify_socket.recv(256) == b"STOPPING=1"
    finally:
        edge.stop()
        origin.stop()


def test_metrics_pass_promtool_and_name_the_build(tmp_path: Path) -> None:
    promtool = tool("promtool")
    origin = plain_origin(tmp_path)
    (origin.root / "page.txt").write_bytes(b"cached")
    edge = start_edge(origin.url, tmp_path / "cache")
    try:
        with pytest.raises(urllib.error.HTTPError, match="404"):
            LOOPBACK.open(edge.url + "/missing", timeout=10)  # a request, so labelled series exist
        for _ in range(2):  # a miss and a hit: histograms, bytes and store series too
            with LOOPBACK.open(edge.url + "/page.txt", timeout=10) as page:
                assert page.read() == b"cached"
        with LOOPBACK.open(admin_url(edge) + "/metrics", timeout=10) as resp:
            text = resp.read().decode()
    finally:
        edge.stop()
        origin.stop()
    checked = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, timeout=60
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "_created" not in text
    assert f'edgecdn_build_info{{python="{sys.version.split()[0]}",version="{__version__}"}} 1.0' in text
    assert "process_resident_memory_bytes" in text
    for series in ("edgecdn_request_seconds_bucket", "edgecdn_origin_request_seconds_bucket"):
        assert series in text
    assert 'edgecdn_store_objects{tier="disk"}' in text
