"""The floor: what a Python server on uvloop + httptools reaches on this machine, with none of the edge.

A calibration for `bench.py --floor` (hit rows only). It answers GET and HEAD for files below ROOT from
memory (each read once; a header block prebuilt per file; a per-request Date and Age), bodies from 64 KiB
on by sendfile from the open file as the edge does, and writes one access-log line per request to a
buffered file. No cache policy, no metrics, no request checks, no pipelining bound: what separates this
server's req/s from the edge's is what the edge's request handling costs. Not a server to deploy.

    python loadtests/floor.py ROOT --listen 127.0.0.1:0 [--access-log FILE]

Prints "floor listening on http://HOST:PORT" once it accepts connections.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from email.utils import formatdate
from pathlib import Path
from typing import IO

import httptools
import uvloop

SENDFILE_FROM = 64 * 1024
NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n"


class Clock:
    """Date and the log's timestamp, formatted once a second (as the edge and nginx do)."""

    def __init__(self) -> None:
        self.second = -1
        self.date = b""
        self.stamp = ""

    def tick(self) -> None:
        now = int(time.time())
        if now != self.second:
            self.second = now
            self.date = formatdate(now, usegmt=True).encode()
            self.stamp = time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now))


CLOCK = Clock()


class Files:
    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._cache: dict[bytes, tuple[bytes, bytes, int, int]] = {}  # path -> head, body, fd, size

    def get(self, target: bytes) -> tuple[bytes, bytes, int, int] | None:
        path = target.split(b"?", 1)[0]
        found = self._cache.get(path)
        if found is None:
            file = (self.root / path.decode("latin-1").lstrip("/")).resolve()
            if self.root not in file.parents or not file.is_file():
                return None
            body = file.read_bytes()
            fd = os.open(file, os.O_RDONLY) if len(body) >= SENDFILE_FROM else -1
            head = (
                b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n"
                b"Cache-Control: public, max-age=3600\r\nX-Cache: HIT\r\nContent-Length: %d\r\n" % len(body)
            )
            found = self._cache[path] = (head, body, fd, len(body))
        return found


class Connection(asyncio.Protocol):
    def __init__(self, files: Files, log: IO[str] | None) -> None:
        self.files, self.log = files, log
        self.url = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.fd = transport.get_extra_info("socket").fileno()
        self.parser = httptools.HttpRequestParser(self)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            self.transport.close()

    def on_url(self, url: bytes) -> None:
        self.url = url

    def on_message_complete(self) -> None:
        found = self.files.get(self.url)
        method = self.parser.get_method()
        if found is None:
            self.transport.write(NOT_FOUND)
            status, sent = 404, 0
        else:
            head, body, fd, size = found
            CLOCK.tick()
            head += b"Date: %s\r\nAge: 0\r\n\r\n" % CLOCK.date
            status, sent = 200, size
            if method == b"HEAD":
                self.transport.write(head)
                sent = 0
            elif fd < 0:
                self.transport.write(head + body)
            else:
                self._sendfile(head, body, fd, size)
        if self.log is not None:
            CLOCK.tick()
            self.log.write(
                f'127.0.0.1 - - [{CLOCK.stamp}] "{method.decode()} {self.url.decode("latin-1")} HTTP/1.1" '
                f'{status} {sent} "-" "-" HIT\n'
            )

    def _sendfile(self, head: bytes, body: bytes, fd: int, size: int) -> None:
        self.transport.write(head)
        offset = 0
        if not self.transport.get_write_buffer_size():
            try:
                while offset < size:
                    n = os.sendfile(self.fd, fd, offset, size - offset)
                    if n == 0:
                        break
                    offset += n
            except BlockingIOError:
                pass
            except OSError:
                self.transport.abort()
                return
        if offset < size:
            self.transport.write(body[offset:])  # the socket is full: the rest through the loop


async def serve(root: Path, host: str, port: int, log: IO[str] | None) -> None:
    files = Files(root)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(files, log), host, port, backlog=4096)
    bound = server.sockets[0].getsockname()
    print(f"floor listening on http://{bound[0]}:{bound[1]}", flush=True)
    await server.serve_forever()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="floor.py", description=__doc__.splitlines()[0])
    p.add_argument("root", type=Path)
    p.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (default 127.0.0.1:0)")
    p.add_argument("--access-log", type=Path, help="append one line per request (buffered)")
    args = p.parse_args(argv)
    host, _, port = args.listen.rpartition(":")
    if not args.root.is_dir() or not port.isdigit():
        p.error("ROOT must be a directory and --listen HOST:PORT")
    log = args.access_log.open("a", buffering=1 << 16) if args.access_log else None
    try:
        uvloop.run(serve(args.root, host, int(port), log))
    except KeyboardInterrupt:
        pass
    finally:
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
