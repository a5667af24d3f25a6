"""TLS and HTTP/2 on the public listener: a real `edgecdn serve --tls-cert --tls-key` with a certificate the
test makes; HTTP/1.1 over TLS and `curl --http2`, and an h2 client for streams, flow control and floods."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import hpack
import hyperframe.frame
import pytest
from h2.errors import ErrorCodes

from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import admin_url, run_module, start_edge
from tests.integration.h2_client import H2Client, Response, make_cert

REDIRECT = re.compile(r"\(redirect (http://\S+)\)")
HITS = 'edgecdn_requests_total{cache_status="HIT"'  # any status_class
BIG = 2 * 2**20  # a disk-tier object (above cache.memory_object_max)
BLOB = "/_test/blob/100000?t=drain"
MID = 600_000  # a memory-tier object large enough to go out in pieces (respond.LARGE_BODY)

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is installed by .ci/run")


class Stack:
    def __init__(self, origin: OriginClient, edge: Proc, cert: Path, key: Path) -> None:
        self.origin, self.edge, self.cert, self.key = origin, edge, cert, key
        self.files = {name: (origin.root / name).read_bytes() for name in ("big.bin", "mid.bin", "small.bin")}

    def h2(self, **kw: object) -> H2Client:
        return H2Client(self.edge.url, self.cert, **kw)  # type: ignore[arg-type]

    def curl(self, path: str, *args: str) -> tuple[str, dict[str, str], bytes]:
        """(HTTP version, lower-cased response fields, body) as curl received them."""
        out = subprocess.run(
            ["curl", "-sS", "--cacert", str(self.cert), "-D", "-", "-o", "-", *args, self.edge.url + path],
            capture_output=True,
            timeout=30,
            check=True,
        ).stdout
        head, _, body = out.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        pairs = [line.split(": ", 1) for line in lines[1:] if ": " in line]
        fields = {name.lower(): value for name, value in pairs}
        return lines[0].split(" ")[0], fields, body


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    cert, key = make_cert(tmp_path_factory.mktemp("tls"))
    root = tmp_path_factory.mktemp("root")
    for name, size in (("big.bin", BIG), ("mid.bin", MID), ("small.bin", 1024)):
        (root / name).write_bytes(os.urandom(size))
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    cache = tmp_path_factory.mktemp("cache")
    edge = start_edge(origin_proc.url, cache, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        yield Stack(OriginClient(origin_proc, root), edge, cert, key)
    finally:
        edge.stop()
        origin_proc.stop()


def test_http11_over_tls_miss_hit_disk_and_memory_objects_and_range(stack: Stack) -> None:
    assert stack.edge.url.startswith("https://")
    for name in ("big.bin", "mid.bin"):  # no sendfile() under TLS: the writer copies, byte-exact
        version, fields, body = stack.curl(f"/{name}?h1", "--http1.1")
        assert (version, fields["x-cache"], body) == ("HTTP/1.1", "MISS", stack.files[name])
        version, fields, body = stack.curl(f"/{name}?h1", "--http1.1")
        assert (fields["x-cache"], len(body)) == ("HIT", len(stack.files[name]))
        assert body == stack.files[name]
    version, fields, body = stack.curl("/big.bin?h1", "--http1.1", "-r", "1000000-1000099")
    assert fields["content-range"] == f"bytes 1000000-1000099/{BIG}"
    assert body == stack.files["big.bin"][1000000:1000100]
    assert stack.origin.hits("/big.bin?h1") == 1


def test_curl_http2(stack: Stack) -> None:
    version, fields, body = stack.curl("/big.bin?curl2", "--http2")
    assert (version, fields["x-cache"], body) == ("HTTP/2", "MISS", stack.files["big.bin"])
    version, fields, body = stack.curl("/big.bin?curl2", "--http2")
    assert (version, fields["x-cache"], body) == ("HTTP/2", "HIT", stack.files["big.bin"])


def test_one_access_log_line_per_stream(stack: Stack, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    tls = ("--tls-cert", str(stack.cert), "--tls-key", str(stack.key))
    edge = start_edge(stack.origin.url, tmp_path / "cache", *tls, "--access-log", str(log))
    try:
        client = H2Client(edge.url, stack.cert)
        try:
            got = [client.get("/small.bin?log"), client.get("/small.bin?log", "HEAD")]
        finally:
            client.close()
    finally:
        assert edge.stop() == 0  # the log is flushed at shutdown
    assert [r.status for r in got] == [200, 200]
    lines = log.read_text().splitlines()
    assert len(lines) == 2, lines
    assert '"GET /small.bin?log HTTP/2.0" 200 1024 ' in lines[0] and " MISS " in lines[0]
    assert '"HEAD /small.bin?log HTTP/2.0" 200 0 ' in lines[1] and " HIT " in lines[1]


def test_response_field_bytes_are_the_same_over_both_protocols(stack: Stack) -> None:
    got = [
        stack.curl(f"/_test/blob/10?t=bytes{i}", version, "-H", "X-Set-X-Word: caf\xe9")[1]["x-word"]
        for i, version in enumerate(("--http1.1", "--http2"))
    ]
    assert got[0] == got[1] != ""


def test_many_streams_on_one_connection_share_one_origin_request(stack: Stack) -> None:
    path = "/_test/blob/300000?t=h2herd"
    client = stack.h2()
    try:
        sids = [client.request(path, headers=[("x-test-gate", "h2herd")]) for _ in range(60)]
        stack.origin.wait_gate("h2herd", 1)
        stack.origin.release("h2herd")
        assert client.pump(lambda: all(client.responses[s].ended for s in sids))
        hit = client.get(path)  # a memory hit beyond the client's window: sent as the window opens
    finally:
        client.close()
    got = [client.responses[s] for s in sids]
    assert {r.status for r in got} == {200}
    assert {len(r.body) for r in got} == {300000}
    assert len({bytes(r.body) for r in got}) == 1
    assert stack.origin.hits(path) == 1
    assert (hit.status, hit.headers["x-cache"], bytes(hit.body)) == (200, "HIT", bytes(got[0].body))


def test_head_range_and_conditional_over_h2(stack: Stack) -> None:
    client = stack.h2()
    try:
        full = client.get("/big.bin?meta")
        head = client.get("/big.bin?meta", "HEAD")
        part = client.get("/mid.bin?meta", headers=[("range", "bytes=100-199")])
        etag = full.headers["etag"]
        cond = client.get("/big.bin?meta", headers=[("if-none-match", etag)])
        small = client.get("/small.bin?meta")
    finally:
        client.close()
    assert bytes(full.body) == stack.files["big.bin"]
    assert (head.status, head.headers["content-length"], len(head.body)) == (200, str(BIG), 0)
    assert (part.status, part.headers["content-range"]) == (206, f"bytes 100-199/{MID}")
    assert bytes(part.body) == stack.files["mid.bin"][100:200]
    assert (cond.status, len(cond.body)) == (304, 0)
    assert (small.status, bytes(small.body)) == (200, stack.files["small.bin"])


def test_a_bad_head_is_refused_on_its_stream_only(stack: Stack) -> None:
    client = stack.h2()
    try:
        sid = client.conn.get_next_available_stream_id()
        head = [(":method", "GET"), (":path", "/small.bin?badhost"), (":scheme", "https")]
        client.conn.send_headers(sid, [*head, (":authority", "good:80@evil")], end_stream=True)
        client.responses[sid] = Response()
        client.flush()
        assert client.pump(lambda: client.responses[sid].ended)
        after = client.get("/small.bin?badhost")  # the same connection goes on
    finally:
        client.close()
    bad = client.responses[sid]
    assert (bad.status, json.loads(bytes(bad.body))) == (400, {"error": "invalid Host"})
    assert (after.status, bytes(after.body)) == (200, stack.files["small.bin"])
    assert stack.origin.hits("/small.bin?badhost") == 1


def test_a_large_body_respects_a_small_client_window(stack: Stack) -> None:
    window = 16384
    client = stack.h2(window=window, auto_ack=False)
    try:
        stack.curl("/big.bin?window", "--http1.1")  # cached first: the edge has every byte ready
        sid = client.request("/big.bin?window")
        r = client.responses[sid]
        assert client.pump(lambda: len(r.body) >= window)
        assert not client.pump(lambda: r.ended, timeout=1.0)  # the edge waits for WINDOW_UPDATE
        assert len(r.body) == window
        client.conn.acknowledge_received_data(client.unacked, sid)
        client.auto_ack = True
        client.flush()
        assert client.pump(lambda: r.ended)
    finally:
        client.close()
    assert bytes(r.body) == stack.files["big.bin"]


def test_clients_that_do_not_read_hold_little_edge_memory(stack: Stack) -> None:
    paths = [f"/_test/blob/400000?t=unread{i}" for i in range(100)]
    warm = stack.h2(window=2**24)
    try:
        sids = [warm.request(p) for p in paths]
        assert warm.pump(lambda: all(warm.responses[s].ended for s in sids))
    finally:
        warm.close()
    pid = stack.edge.pid
    before, hits = _rss(pid), _hits(stack)
    clients = []
    try:
        for _ in range(5):  # 5 x 100 streams of 400 KB memory hits (200 MB), windows wide open, never read
            client = stack.h2(window=2**31 - 1)
            client.conn.increment_flow_control_window(2**31 - 1 - 65535)
            for p in paths:
                client.request(p)
            clients.append(client)
        assert stack.origin.hits(paths[0]) == 1
        for _ in range(400):  # every stream answered (its handler done), none of them read
            if _hits(stack) >= hits + 500:
                break
            time.sleep(0.05)
        assert _hits(stack) >= hits + 500
        held = _rss(pid) - before
    finally:
        for client in clients:
            client.close()
    assert held < 16 * 2**20, f"RSS grew {held // 2**20} MiB"
    _still_healthy(stack)


def _hits(stack: Stack) -> float:
    with urllib.request.urlopen(admin_url(stack.edge) + "/metrics", timeout=10) as r:
        text = r.read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(HITS))


def _rss(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) * 1024


def test_a_rapid_reset_flood_gets_goaway_and_the_edge_stays_healthy(stack: Stack) -> None:
    client = stack.h2()
    try:
        for _ in range(20):  # 1000 streams opened and reset at once (CVE-2023-44487)
            for _ in range(50):
                sid = client.request("/small.bin?reset")
                client.conn.reset_stream(sid, ErrorCodes.CANCEL)
            if not client.send(client.conn.data_to_send()):
                break
        code = client.goaway()
    finally:
        client.close()
    assert code == ErrorCodes.ENHANCE_YOUR_CALM
    assert stack.origin.hits("/small.bin?reset") <= 1
    _still_healthy(stack)


@pytest.mark.parametrize("endless", [False, True], ids=["oversized-header-list", "endless-continuation"])
def test_an_oversized_header_block_is_refused(stack: Stack, endless: bool) -> None:
    client = stack.h2()
    try:
        fields = [(":method", "GET"), (":path", "/small.bin?cont"), (":scheme", "https")]
        fields += [(":authority", client.authority)] + [(f"x-pad-{i}", "a" * 4000) for i in range(40)]
        block = hpack.Encoder().encode(fields)
        pieces = [block[i : i + 16384] for i in range(0, len(block), 16384)]
        if endless:  # never END_HEADERS: the edge must stop buffering long before memory runs out
            pieces = [pieces[0]] + [b"\0" * 16384] * 100
        frames = [hyperframe.frame.HeadersFrame(1, data=pieces[0])]
        frames += [hyperframe.frame.ContinuationFrame(1, data=p) for p in pieces[1:]]
        if not endless:
            frames[-1].flags.add("END_HEADERS")
        for frame in frames:
            if not client.send(frame.serialize()):
                break
        code = client.goaway()
    finally:
        client.close()
    assert code in (ErrorCodes.ENHANCE_YOUR_CALM, ErrorCodes.PROTOCOL_ERROR)
    assert stack.origin.hits("/small.bin?cont") == 0
    _still_healthy(stack)


def test_a_request_body_streams_through_to_the_origin(stack: Stack) -> None:
    body = os.urandom(1_000_000)  # many times the stream window the edge grants: its WINDOW_UPDATEs move it
    client = stack.h2()
    try:
        r = client.get("/_test/echo?h2post", "POST", [("content-type", "application/octet-stream")], body)
    finally:
        client.close()
    assert r.status == 200
    echoed = json.loads(bytes(r.body))
    assert (echoed["method"], echoed["body_len"]) == ("POST", len(body))


def test_an_empty_data_frame_does_not_end_a_request_body(stack: Stack) -> None:
    client = stack.h2()
    try:
        sid = client.conn.get_next_available_stream_id()
        head = [(":method", "POST"), (":path", "/_test/echo?empty"), (":scheme", "https")]
        client.conn.send_headers(sid, [*head, (":authority", client.authority)])
        for part in (b"a" * 1000, b"", b"b" * 1000):
            client.conn.send_data(sid, part)
        client.conn.end_stream(sid)
        client.responses[sid] = Response()
        client.flush()
        assert client.pump(lambda: client.responses[sid].ended)
    finally:
        client.close()
    assert json.loads(bytes(client.responses[sid].body))["body_len"] == 2000


def test_stream_and_ping_floods_get_goaway(stack: Stack) -> None:
    encoder = hpack.Encoder()
    head = [(":method", "GET"), (":path", "/small.bin?flood"), (":scheme", "https")]
    client = stack.h2()
    try:  # 150 streams left open at once (no END_STREAM), beyond the 100 the edge allows
        frames = [hyperframe.frame.HeadersFrame(sid, data=encoder.encode(head)) for sid in range(1, 301, 2)]
        for frame in frames:
            frame.flags.add("END_HEADERS")
        client.send(b"".join(f.serialize() for f in frames))
        streams = client.goaway()
    finally:
        client.close()
    client = stack.h2()
    try:
        for i in range(1000):
            client.conn.ping(b"%08d" % i)
        client.send(client.conn.data_to_send())
        pings = client.goaway()
    finally:
        client.close()
    assert streams in (ErrorCodes.PROTOCOL_ERROR, ErrorCodes.ENHANCE_YOUR_CALM)
    assert pings == ErrorCodes.ENHANCE_YOUR_CALM
    _still_healthy(stack)


def test_idle_connections_get_goaway_and_sigterm_drains_streams(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "edge.toml").write_text('[server]\nkeepalive_timeout = "1s"\nbody_timeout = "1s"\n')
    tls = ("--tls-cert", str(stack.cert), "--tls-key", str(stack.key))
    edge = start_edge(stack.origin.url, tmp_path / "cache", *tls, "-c", str(tmp_path / "edge.toml"))
    idle = H2Client(edge.url, stack.cert)
    try:
        assert idle.get("/small.bin?idle").status == 200
        # A request body that never comes ends at server.body_timeout, not at the idle timeout.
        stalled = idle.conn.get_next_available_stream_id()
        head = [(":method", "POST"), (":path", "/_test/echo?stalled"), (":scheme", "https")]
        idle.conn.send_headers(stalled, [*head, (":authority", idle.authority)])
        idle.conn.send_data(stalled, b"12345")
        idle.responses[stalled] = Response()
        idle.flush()
        assert idle.pump(lambda: idle.responses[stalled].ended or idle.responses[stalled].reset)
        assert idle.responses[stalled].reset or idle.responses[stalled].status >= 500
        idle_code = idle.goaway()  # after keepalive_timeout with no stream open
        # A stream in progress at SIGTERM is answered in full (curl: the h2 client closes on any GOAWAY).
        cmd = ["curl", "-sS", "--http2", "--cacert", str(stack.cert), "-H", "X-Test-Gate: drain"]
        cmd += ["-o", str(tmp_path / "body"), "-w", "%{http_version} %{http_code}", edge.url + BLOB]
        busy = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
        try:
            stack.origin.wait_gate("drain", 1)
            edge.signal(signal.SIGTERM)
            _wait_refused(edge.url)  # draining: the listener is closed, the stream still waits
            stack.origin.release("drain")
            out, _ = busy.communicate(timeout=30)
        finally:
            busy.kill()
    finally:
        idle.close()
        code = edge.stop()
    assert (idle_code, out, code) == (ErrorCodes.NO_ERROR, "2 200", 0)
    assert (tmp_path / "body").stat().st_size == 100000


def test_plain_http_on_the_redirect_listener_gets_308_to_https(stack: Stack, tmp_path: Path) -> None:
    tls = ("--tls-cert", str(stack.cert), "--tls-key", str(stack.key))
    edge = start_edge(stack.origin.url, tmp_path / "cache", *tls, "--redirect-listen", "127.0.0.1:0")
    try:
        plain = next(m.group(1) for line in edge.stdout_lines if (m := REDIRECT.search(line)))
        port = urlsplit(edge.url).port
        got = subprocess.run(
            ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{redirect_url}", plain + "/a/b?c=1"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
        followed = subprocess.run(
            ["curl", "-sS", "-L", "--cacert", str(stack.cert), plain + "/small.bin?redirected"],
            capture_output=True,
            timeout=30,
        ).stdout
    finally:
        edge.stop()
    assert got == f"308 https://127.0.0.1:{port}/a/b?c=1"
    assert followed == stack.files["small.bin"]


def _wait_refused(url: str) -> None:
    address = urlsplit(url)
    for _ in range(200):
        try:
            socket.create_connection((address.hostname, address.port), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    pytest.fail("the listener still accepts after SIGTERM")


def _still_healthy(stack: Stack) -> None:
    assert stack.edge.returncode is None
    client = stack.h2()
    try:
        r = client.get("/small.bin")
    finally:
        client.close()
    assert (r.status, bytes(r.body)) == (200, stack.files["small.bin"])


def test_bad_certificate_or_key_is_one_line_and_exit_2(stack: Stack, tmp_path: Path) -> None:
    other_cert, _ = make_cert(tmp_path)
    encrypted = tmp_path / "encrypted.pem"
    subprocess.run(
        [
            *("openssl", "genpkey", "-algorithm", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-aes256", "-pass", "pass:secret", "-out", str(encrypted)),
        ],
        check=True,
        capture_output=True,
    )
    base = [
        "serve",
        "--origin",
        "http://127.0.0.1:9",
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ]
    cases = [
        (["--tls-cert", str(tmp_path / "missing.pem"), "--tls-key", str(stack.key)], "no such file"),
        (["--tls-cert", str(stack.cert), "--tls-key", str(tmp_path / "missing.pem")], "no such file"),
        (["--tls-cert", str(other_cert), "--tls-key", str(stack.key)], "the key does not match"),
        (["--tls-cert", str(stack.key), "--tls-key", str(stack.key)], "not a PEM certificate"),
        (["--tls-cert", str(stack.cert), "--tls-key", str(encrypted)], "the key is encrypted"),
        (["--tls-cert", str(stack.cert)], "give both or neither"),
    ]
    for extra, why in cases:
        done = run_module("edgecdn", *base, "--cache-dir", str(tmp_path / "cache"), *extra)
        assert done.returncode == 2, (extra, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert "server.tls_" in done.stderr and why in done.stderr, done.stderr
    toml = tmp_path / "edge.toml"
    toml.write_text(
        'origins = ["http://127.0.0.1:9"]\n'
        f'[server]\ntls_cert = "{stack.cert}"\ntls_key = "{tmp_path / "missing.pem"}"\n'
    )
    done = run_module("edgecdn", "check-config", str(toml))
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1, done.stderr
