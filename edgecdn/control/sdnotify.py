"""systemd's readiness protocol (sd_notify): `READY=1` once listening, `STOPPING=1` when draining.

Rules of this file: without NOTIFY_SOCKET (not under systemd) every call is a no-op; a failure to notify is
logged and never stops the server. Shared by `edgecdn serve` and `edgecdn-origin serve`.
"""

from __future__ import annotations

import logging
import os
import socket

log = logging.getLogger("edgecdn.sdnotify")


def notify(state: str) -> bool:
    """Send one state line (e.g. "READY=1") to the service manager; True if it was sent."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):  # an abstract socket
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError as e:
        log.warning("sd_notify %s to %r failed: %s", state, os.environ.get("NOTIFY_SOCKET"), e)
        return False
    return True
