"""In-process cost of one memory hit: µs per request through HttpConnection → Edge.dispatch → writer.

Times are CPU µs of the loop's thread (`time.thread_time`), which other processes on a busy machine
disturb far less than wall time. A fake transport feeds keep-alive requests (`--depth` pipelined per
read) for one memory object to a real `HttpConnection` of a real `Edge` (access log to a file, metrics
on) on uvloop; no sockets, no load generator, so what is timed is the edge's Python only. The object
is filled once from an in-process origin first (a real miss), so the hit is what the listener serves.

    .venv/bin/python loadtests/hitpath.py                       # 1 KiB, depth 1, best of 5 x 20000
    .venv/bin/python loadtests/hitpath.py --size 65536 --depth 8
    .venv/bin/python loadtests/hitpath.py --profile            # cProfile, top 25 by own time
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import uvloop
from aiohttp import web
from aiohttp.test_utils import TestServer

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edgecdn.cli import build_parser, config_from_args
from edgecdn.serve.app import Edge, public_protocol
from edgecdn.serve.connection import Connections, HttpConnection


class FakeTransport:
    """What HttpConnection and the writer use of a transport; counts responses (one write call each)."""

    def __init__(self) -> None:
        self.writes = 0
        self.bytes = 0
        self.want = 0
        self.done: asyncio.Future[None] | None = None
        self.closed = False

    def _wrote(self, n: int) -> None:
        self.bytes += n
        self.writes += 1
        if self.writes >= self.want and self.done is not None and not self.done.done():
            self.done.set_result(None)

    def write(self, data: bytes) -> None:
        self._wrote(len(data))

    def writelines(self, parts: Any) -> None:
        self._wrote(sum(len(p) for p in parts))

    def is_closing(self) -> bool:
        return self.closed

    def get_write_buffer_size(self) -> int:
        return 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return ("127.0.0.1", 40000) if name == "peername" else default

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass

    def can_write_eof(self) -> bool:
        return True

    def write_eof(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.closed = True


async def _origin(size: int) -> web.Application:
    body = b"x" * size

    async def obj(_: web.Request) -> web.Response:
        return web.Response(body=body, headers={"Cache-Control": "max-age=3600", "ETag": '"v1"'})

    app = web.Application()
    app.router.add_get("/obj", obj)
    return app


async def run(args: argparse.Namespace) -> list[float]:
    loop = asyncio.get_running_loop()
    with tempfile.TemporaryDirectory() as tmp:
        async with TestServer(await _origin(args.size), host="127.0.0.1") as origin:
            url = str(origin.make_url("")).rstrip("/")
            argv = ["serve", "--origin", url, "--cache-dir", tmp]
            argv += ["--access-log", f"{tmp}/access.log"] if not args.no_log else ["--no-access-log"]
            edge = Edge(config_from_args(build_parser().parse_args(argv)))
            await edge.start()
            conn: HttpConnection = public_protocol(edge, Connections())()
            transport = FakeTransport()
            conn.connection_made(transport)  # type: ignore[arg-type]
            request = b"GET /obj HTTP/1.1\r\nHost: bench\r\nUser-Agent: hitpath\r\nAccept: */*\r\n\r\n"

            async def batch(n: int) -> None:
                transport.want = transport.writes + n
                transport.done = loop.create_future()
                conn.data_received(request * n)
                await transport.done

            await batch(1)  # the miss that fills the memory tier
            for _ in range(50):
                await asyncio.sleep(0.01)
                if edge.store.lookup_memory("/obj", {}) is not None:  # type: ignore[arg-type]
                    break
            await batch(100)  # warm
            results = []
            rounds = args.requests // args.depth
            prof = cProfile.Profile() if args.profile else None
            for _ in range(args.reps):
                if prof is not None:
                    prof.enable()
                t0 = time.thread_time()  # this thread's CPU: steadier than wall time on a shared machine
                for _ in range(rounds):
                    await batch(args.depth)
                dt = time.thread_time() - t0
                if prof is not None:
                    prof.disable()
                results.append(dt / (rounds * args.depth) * 1e6)
            conn.connection_lost(None)
            await edge.close()
            if prof is not None:
                stats = pstats.Stats(prof)
                stats.sort_stats(args.sort).print_stats(args.top)
            return results


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=1024, help="body bytes (default 1024)")
    p.add_argument("--depth", type=int, default=1, help="requests pipelined per read (default 1, max 32)")
    p.add_argument("--requests", type=int, default=20000, help="requests per repetition")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--no-log", action="store_true", help="access log off")
    p.add_argument("--profile", action="store_true", help="cProfile the timed runs")
    p.add_argument("--sort", default="tottime", help="pstats sort key (tottime, cumulative)")
    p.add_argument("--top", type=int, default=25)
    args = p.parse_args()
    args.depth = max(1, min(args.depth, 32))
    results = uvloop.run(run(args))
    best = min(results)
    runs = " ".join(f"{r:.2f}" for r in results)
    what = f"size={args.size} depth={args.depth} log={not args.no_log}"
    print(f"{what}: best {best:.2f} CPU µs/request ({runs})")


if __name__ == "__main__":
    main()
