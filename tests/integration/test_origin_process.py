"""The real ``edgecdn-origin`` process: readiness on port 0, files, hits, CLI errors, signals."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.conftest import REPO, OriginClient, Proc

pytestmark = pytest.mark.integration

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def fetch(url: str, **headers: str) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers={k.replace("_", "-"): v for k, v in headers.items()})
    with _OPENER.open(req, timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


def test_serves_a_file_and_counts_hits(origin: OriginClient) -> None:
    (origin.root / "hello.txt").write_bytes(b"hello edge\n")

    status, headers, body = fetch(origin.url + "/hello.txt")
    fetch(origin.url + "/hello.txt?x=1")

    assert (status, body) == (200, b"hello edge\n")
    assert headers["Cache-Control"] == "max-age=60"
    assert headers["Content-Length"] == "11"
    assert origin.hits("/hello.txt") == 1
    assert origin.hits("/hello.txt?x=1") == 1
    assert origin.requests("/hello.txt")[0]["headers"]["Host"].startswith("127.0.0.1:")


def test_listens_on_an_ephemeral_port(origin: OriginClient) -> None:
    assert origin.url.startswith("http://127.0.0.1:")
    assert int(origin.url.rsplit(":", 1)[1]) > 0
    assert origin.proc.stdout_lines == [f"edgecdn-origin listening on {origin.url}"]


def test_gate_holds_until_released(origin: OriginClient) -> None:
    (origin.root / "slow.txt").write_bytes(b"slow")
    result: list[bytes] = []
    client = threading.Thread(
        target=lambda: result.append(fetch(origin.url + "/slow.txt", X_Test_Gate="g")[2])
    )
    client.start()

    origin.wait_gate("g")
    assert result == []
    origin.release("g")
    client.join(10)

    assert result == [b"slow"]
    assert origin.hits("/slow.txt") == 1


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "origin", *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize(
    "args",
    [
        pytest.param(["serve", "/nonexistent"], id="missing-root"),
        pytest.param(["serve", ".", "--listen", "nowhere"], id="listen-no-port"),
        pytest.param(["serve", ".", "--listen", "127.0.0.1:70000"], id="listen-port-range"),
        pytest.param(["serve", ".", "--config", "/nonexistent.toml"], id="missing-config"),
        pytest.param(["serve"], id="no-root"),
        pytest.param([], id="no-command"),
        pytest.param(["frobnicate"], id="unknown-command"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(args: list[str]) -> None:
    done = run_cli(*args)

    assert done.returncode == 2
    assert done.stdout == ""
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "error" in done.stderr and "Traceback" not in done.stderr


def test_unknown_config_key_is_named(tmp_path: Path) -> None:
    config = tmp_path / "origin.toml"
    config.write_text('[[rules]]\npattern = "*.css"\ncache_contrl = "max-age=1"\n')

    done = run_cli("serve", str(tmp_path), "--config", str(config))

    assert done.returncode == 2
    assert done.stderr.strip().endswith("rules[0].cache_contrl: unknown key (did you mean 'cache_control'?)")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    proc = Proc("origin", "serve", str(tmp_path), "--listen", "127.0.0.1:0")
    for path in ("/missing", "/_test/hits"):
        with pytest.raises(urllib.error.HTTPError) as refused:
            fetch(proc.url + path)
        assert refused.value.code == 404
        refused.value.close()

    proc.signal(sig)
    proc.popen.wait(10)
    assert proc.stop() == 0
    assert "Traceback" not in proc.stderr_text()


def test_sigterm_with_a_held_request_still_exits_cleanly(origin: OriginClient) -> None:
    (origin.root / "held.txt").write_bytes(b"held")
    client = threading.Thread(
        target=lambda: fetch(origin.url + "/held.txt", X_Test_Gate="never"), daemon=True
    )
    client.start()
    origin.wait_gate("never")

    assert origin.stop() == 0
    client.join(10)
