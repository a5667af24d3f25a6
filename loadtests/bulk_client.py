#!/usr/bin/env python3
"""The bulk load generator: keep-alive GETs on N connections, bodies dropped inside the kernel.

Rules of this file: one process, one thread, epoll; it only connects to 127.0.0.1; it prints one
JSON line (req_s, mib_s, p50_ms, p99_ms, errors, requests) and exits 0, or exits non-zero.

    python loadtests/bulk_client.py PORT PATH CONNECTIONS DURATION_S
"""

from __future__ import annotations

import json
import re
import selectors
import socket
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from processes import LOOPBACK


@dataclass
class _Conn:
    sock: socket.socket
    head: bytearray = field(default_factory=bytearray)
    left: int = -1  # body bytes still to come; -1 while reading the head
    t0: float = 0.0


def bulk_client(port: int, path: str, connections: int, duration: float) -> dict[str, Any]:
    """Keep-alive GET loop on N connections; bodies are dropped in the kernel (MSG_TRUNC)."""
    request = f"GET {path} HTTP/1.1\r\nHost: {LOOPBACK}:{port}\r\n\r\n".encode()
    sink = bytearray(4 * 2**20)
    sel = selectors.EpollSelector()
    latencies: list[float] = []
    done_bytes = errors = 0

    def connect() -> _Conn:
        sock = socket.create_connection((LOOPBACK, port))
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setblocking(False)
        conn = _Conn(sock)
        sel.register(sock, selectors.EVENT_READ, conn)
        send(conn)
        return conn

    def send(conn: _Conn) -> None:
        conn.head.clear()
        conn.left = -1
        conn.t0 = time.perf_counter()
        conn.sock.sendall(request)  # a tiny request always fits the empty send buffer

    def reconnect(conn: _Conn) -> None:
        sel.unregister(conn.sock)
        conn.sock.close()
        try:
            connect()
        except OSError as e:
            raise SystemExit(f"bulk client: cannot reconnect to {LOOPBACK}:{port}: {e}") from None

    try:
        for _ in range(connections):
            connect()
    except OSError as e:
        raise SystemExit(f"bulk client: cannot connect to {LOOPBACK}:{port}: {e}") from None
    start = time.perf_counter()
    end = start + duration
    while (now := time.perf_counter()) < end:
        for key, _ in sel.select(end - now):
            conn: _Conn = key.data
            try:
                if conn.left < 0:
                    chunk = conn.sock.recv(8192)
                    n = len(chunk)
                    conn.head += chunk
                else:
                    n = conn.sock.recv_into(sink, min(conn.left, len(sink)), socket.MSG_TRUNC)
            except BlockingIOError:
                continue
            except OSError:
                errors += 1
                reconnect(conn)
                continue
            if n == 0:
                errors += 1
                reconnect(conn)
                continue
            done_bytes += n
            if conn.left < 0:
                end_of_head = conn.head.find(b"\r\n\r\n")
                if end_of_head < 0:
                    continue
                head = bytes(conn.head[:end_of_head]).lower()
                m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
                if not head.startswith((b"http/1.1 2", b"http/1.0 2")) or not m:
                    errors += 1  # not a 2xx with a length: not a cache hit we can measure
                    reconnect(conn)
                    continue
                conn.left = int(m.group(1)) - (len(conn.head) - end_of_head - 4)
            else:
                conn.left -= n
            if conn.left == 0:
                latencies.append(time.perf_counter() - conn.t0)
                send(conn)
    elapsed = time.perf_counter() - start
    latencies.sort()

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(len(latencies) * p))] * 1e3 if latencies else 0

    return {
        "requests": len(latencies),
        "req_s": len(latencies) / elapsed,
        "mib_s": done_bytes / elapsed / 2**20,
        "p50_ms": pct(0.50),
        "p99_ms": pct(0.99),
        "errors": errors,
    }


def main(argv: list[str]) -> int:
    """PORT PATH CONNECTIONS DURATION_S; prints the result as one JSON line."""
    port, path, connections, duration = argv[:4]
    print(json.dumps(bulk_client(int(port), path, int(connections), float(duration))))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
