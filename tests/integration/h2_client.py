"""A small blocking HTTP/2 client over TLS for integration tests (the h2 package, client side).

Every read is bounded by a socket timeout and every loop by a deadline; frames may be written raw to
test what a well-behaved client never sends.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import h2.config
import h2.connection
import h2.events
import h2.settings

READ_TIMEOUT_S = 10.0


def make_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for localhost / 127.0.0.1 made with `openssl req`: (cert, key)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"),
            *("-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@dataclass
class Response:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)
    ended: bool = False
    reset: bool = False


class H2Client:
    """One HTTP/2 connection; `pump` reads until a condition holds (or fails after a deadline)."""

    def __init__(self, url: str, cafile: Path, *, window: int | None = None, auto_ack: bool = True) -> None:
        parts = urlsplit(url)
        ctx = ssl.create_default_context(cafile=str(cafile))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection((parts.hostname, parts.port), timeout=READ_TIMEOUT_S)
        self.sock = ctx.wrap_socket(raw, server_hostname="localhost")
        assert self.sock.selected_alpn_protocol() == "h2"
        self.authority = parts.netloc
        config = h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.initiate_connection()
        if window is not None:
            self.conn.update_settings({h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window})
        self.auto_ack = auto_ack
        self.responses: dict[int, Response] = {}
        self.terminated: h2.events.ConnectionTerminated | None = None
        self.closed = False
        self.unacked = 0
        self.flush()

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self, path: str, method: str = "GET", headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> int:
        """Open a stream; a body goes out as the edge's windows allow (its WINDOW_UPDATEs are awaited)."""
        sid = self.conn.get_next_available_stream_id()
        head = [(":method", method), (":path", path), (":scheme", "https"), (":authority", self.authority)]
        self.conn.send_headers(sid, head + list(headers), end_stream=not body)
        self.responses[sid] = Response()
        self.flush()
        at = 0
        while at < len(body):
            window = min(self.conn.local_flow_control_window(sid), self.conn.max_outbound_frame_size)
            if window <= 0:
                assert self.pump(lambda: self.conn.local_flow_control_window(sid) > 0)
                continue
            self.conn.send_data(sid, body[at : at + window], end_stream=at + window >= len(body))
            at += window
            self.flush()
        return sid

    def pump(self, until: Callable[[], bool], timeout: float = READ_TIMEOUT_S) -> bool:
        """Read and handle frames until `until()` holds; False if the socket stays quiet for `timeout`."""
        deadline = time.monotonic() + 30.0
        self.sock.settimeout(timeout)
        while not until():
            if self.closed or time.monotonic() > deadline:
                return until()
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return False
            except (ssl.SSLError, ConnectionError):
                data = b""
            if not data:
                self.closed = True
                continue
            self.feed(data)
        return True

    def feed(self, data: bytes) -> None:
        for event in self.conn.receive_data(data):
            if isinstance(event, h2.events.ResponseReceived):
                r = self.responses[event.stream_id]
                for n, v in event.headers or ():
                    r.headers[str(n)] = str(v)
                r.status = int(r.headers[":status"])
            elif isinstance(event, h2.events.DataReceived):
                self.responses[event.stream_id].body += event.data or b""
                size = event.flow_controlled_length or 0
                if self.auto_ack:
                    self.conn.acknowledge_received_data(size, event.stream_id)
                else:
                    self.unacked += size
            elif isinstance(event, h2.events.StreamEnded):
                self.responses[event.stream_id].ended = True
            elif isinstance(event, h2.events.StreamReset):
                if event.stream_id in self.responses:
                    self.responses[event.stream_id].reset = True
            elif isinstance(event, h2.events.ConnectionTerminated):
                self.terminated = event
        try:
            self.flush()
        except OSError:
            self.closed = True

    def get(
        self, path: str, method: str = "GET", headers: Iterable[tuple[str, str]] = (), body: bytes = b""
    ) -> Response:
        sid = self.request(path, method, headers, body)
        assert self.pump(lambda: self.responses[sid].ended or self.responses[sid].reset)
        return self.responses[sid]

    def send(self, data: bytes) -> bool:
        """Raw bytes to the edge; False once it has closed the connection."""
        try:
            self.sock.sendall(data)
        except OSError:
            return False
        return True

    def goaway(self) -> int | None:
        """The error code of the edge's GOAWAY (None: none came)."""
        self.pump(lambda: self.terminated is not None)
        return None if self.terminated is None else int(self.terminated.error_code or 0)

    def close(self) -> None:
        self.sock.close()
