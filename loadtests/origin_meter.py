"""A counting reverse proxy in front of the origin: requests per second and peak concurrent requests.

    python loadtests/origin_meter.py --origin http://127.0.0.1:9000 --listen 127.0.0.1:0

Rules of this file: it listens on 127.0.0.1 only and forwards to one origin on loopback; bodies are
streamed, never held; `GET /_meter` answers {"total", "in_flight", "peak", "per_second": [...]} and
`POST /_meter/reset` zeroes it. Edges are started with the meter as their origin.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, field

from aiohttp import ClientSession, ClientTimeout, web

HOP = frozenset(
    {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection", "host"}
)
SESSION = web.AppKey("session", ClientSession)


@dataclass
class Meter:
    total: int = 0
    in_flight: int = 0
    peak: int = 0
    start: float = field(default_factory=time.monotonic)
    seconds: dict[int, int] = field(default_factory=dict)  # requests started in each second since start

    def enter(self) -> None:
        second = int(time.monotonic() - self.start)
        self.seconds[second] = self.seconds.get(second, 0) + 1
        self.total += 1
        self.in_flight += 1
        self.peak = max(self.peak, self.in_flight)

    def to_json(self) -> dict[str, object]:
        span = max(self.seconds, default=-1) + 1
        per_second = [self.seconds.get(i, 0) for i in range(span)]
        return {"total": self.total, "in_flight": self.in_flight, "peak": self.peak, "per_second": per_second}


def make_app(origin: str) -> web.Application:
    meter = Meter()

    async def show(_: web.Request) -> web.Response:
        return web.json_response(meter.to_json())

    async def reset(_: web.Request) -> web.Response:
        nonlocal meter
        meter = Meter(peak=meter.in_flight, in_flight=meter.in_flight)
        return web.json_response({"reset": True})

    async def forward(request: web.Request) -> web.StreamResponse:
        counted = meter
        counted.enter()
        try:
            headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
            async with request.app[SESSION].request(
                request.method, origin + request.raw_path, headers=headers, allow_redirects=False
            ) as up:
                resp = web.StreamResponse(status=up.status)
                for k, v in up.headers.items():
                    if k.lower() not in HOP:
                        resp.headers.add(k, v)
                await resp.prepare(request)
                async for chunk in up.content.iter_chunked(1 << 16):
                    await resp.write(chunk)
                await resp.write_eof()
                return resp
        finally:
            counted.in_flight -= 1

    async def start(app: web.Application) -> None:
        timeout = ClientTimeout(total=None, sock_read=60)
        app[SESSION] = ClientSession(timeout=timeout, auto_decompress=False, trust_env=False)

    async def stop(app: web.Application) -> None:
        await app[SESSION].close()

    app = web.Application()
    app.on_startup.append(start)
    app.on_cleanup.append(stop)
    app.router.add_get("/_meter", show)
    app.router.add_post("/_meter/reset", reset)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


async def serve(origin: str, host: str, port: int) -> None:
    runner = web.AppRunner(make_app(origin), access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    bound = runner.addresses[0][1]
    print(f"origin meter listening on http://{host}:{bound}", flush=True)
    await asyncio.Event().wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--origin", required=True)
    p.add_argument("--listen", default="127.0.0.1:0")
    args = p.parse_args()
    host, _, port = args.listen.rpartition(":")
    if host != "127.0.0.1" or not args.origin.startswith("http://127."):
        print("origin_meter: loopback only (127.0.0.1)", file=sys.stderr)
        return 2
    try:
        asyncio.run(serve(args.origin.rstrip("/"), host, int(port)))
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
