"""Plain HTTP to HTTPS: the optional `server.redirect_listen` answers every request 308 to the TLS listener.

Rules of this file: nothing is served and nothing forwarded here; the target goes back as it came (the
client's own path and query), on the request's host (checked like any Host) with the TLS listener's port.
"""

from __future__ import annotations

import asyncio

from edgecdn.config import parse_hostport
from edgecdn.serve.app import Edge, public_limits
from edgecdn.serve.connection import Connections, HttpConnection
from edgecdn.serve.request import Request
from edgecdn.serve.writer import Fields, ResponseWriter

BACKLOG = 1024


def location(host: str, target: str, port: int) -> str | None:
    """`https://host[:port]/target` for this request's Host (None: no Host to send the client to)."""
    name = host
    if host.startswith("["):
        name = host[: host.find("]") + 1]
    elif ":" in host:
        name = host.rpartition(":")[0]
    if not name:
        return None
    return f"https://{name}{'' if port == 443 else f':{port}'}{target}"


async def listen_redirect(edge: Edge, connections: Connections, tls: asyncio.Server) -> asyncio.Server | None:
    """Bind `server.redirect_listen` (if set), pointing clients at the TLS listener `tls`."""
    cfg = edge.cfg.server
    if not cfg.redirect_listen:
        return None
    port = tls.sockets[0].getsockname()[1]
    host, bind_port = parse_hostport(cfg.redirect_listen, "server.redirect_listen")
    limits = public_limits(edge.cfg)
    loop = asyncio.get_running_loop()

    async def redirect(request: Request, out: ResponseWriter) -> None:
        to = location(request.host, request.target, port)
        fields = Fields((("Cache-Control", "no-store"), ("Content-Type", "text/plain")))
        if to is None:
            out.send(400, fields, b"Host required\n")
        else:
            fields.extra.append(("Location", to))
            out.send(308, fields, b"")
        if edge.access_log is not None:
            edge.access_log.request(request, out, loop.time())

    def protocol() -> HttpConnection:
        return HttpConnection(redirect, limits, connections, edge.refused)

    # reuse_port: a successor (SIGHUP/SIGUSR2 handover) binds it while its predecessor still drains.
    return await loop.create_server(protocol, host, bind_port, backlog=BACKLOG, reuse_port=True)
