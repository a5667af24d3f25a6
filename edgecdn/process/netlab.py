"""A throw-away network of namespaces for the VIP pair: core (the edges) and one per balancer, plus a client.

Rules of this file: every address is in 127.0.10.0/24 and lives only inside namespaces made here; the root
namespace gets no link, address or route; `remove` deletes every namespace made (and so every link in it).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

from edgecdn.errors import EdgeError

NET = "127.0.10"
CORE_ADDRESS = f"{NET}.10"  # the bridge in the core namespace: origin, shield and edges listen here
CLIENT_ADDRESS = f"{NET}.50"
VIP = f"{NET}.100"
PREFIX = 24


@dataclass(frozen=True)
class Lab:
    prefix: str  # namespace names start with it: PREFIX-core, PREFIX-lb1, ..., PREFIX-cli
    balancers: tuple[str, ...]

    @property
    def core(self) -> str:
        return f"{self.prefix}-core"

    @property
    def client(self) -> str:
        return f"{self.prefix}-cli"

    def ns(self, balancer: str) -> str:
        return f"{self.prefix}-{balancer}"

    def address(self, balancer: str) -> str:
        return f"{NET}.{self.balancers.index(balancer) + 1}"

    def namespaces(self) -> list[str]:
        return [self.core, *(self.ns(b) for b in self.balancers), self.client]

    def exec_argv(self, ns: str, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", ns, *argv]


def ip(*args: str) -> None:
    done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=10)
    if done.returncode != 0:
        raise EdgeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


def _sysctl(ns: str, *settings: str) -> None:
    for s in settings:
        done = subprocess.run(
            ["ip", "netns", "exec", ns, "sysctl", "-qw", s], capture_output=True, text=True, timeout=10
        )
        if done.returncode != 0:
            raise EdgeError(f"sysctl {s} in {ns}: {done.stderr.strip()}")


def _loopback_only_itself(ns: str) -> None:
    """lo keeps 127.0.0.1/32 only, so the rest of 127/8 (our 127.0.10.0/24) can live on real links."""
    ip("-n", ns, "link", "set", "lo", "up")
    ip("-n", ns, "addr", "del", "127.0.0.1/8", "dev", "lo")
    ip("-n", ns, "addr", "add", "127.0.0.1/32", "dev", "lo")
    _sysctl(ns, "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.default.route_localnet=1")


def create(prefix: str, balancers: Sequence[str]) -> Lab:
    """Namespaces, a bridge in the core one, a veth from it to each balancer and to the client."""
    lab = Lab(prefix, tuple(balancers))
    try:
        for ns in lab.namespaces():
            ip("netns", "add", ns)
            _loopback_only_itself(ns)
        ip("-n", lab.core, "link", "add", "br0", "type", "bridge")
        ip("-n", lab.core, "link", "set", "br0", "up")
        ip("-n", lab.core, "addr", "add", f"{CORE_ADDRESS}/{PREFIX}", "dev", "br0")
        _sysctl(lab.core, "net.ipv4.conf.br0.route_localnet=1")
        legs = [(b, lab.ns(b), lab.address(b)) for b in balancers] + [("cli", lab.client, CLIENT_ADDRESS)]
        for name, ns, address in legs:
            ip(
                "-n",
                lab.core,
                "link",
                "add",
                f"v-{name}",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                ns,
            )
            ip("-n", lab.core, "link", "set", f"v-{name}", "master", "br0", "up")
            _sysctl(ns, "net.ipv4.conf.eth0.route_localnet=1", "net.ipv4.ip_nonlocal_bind=1")
            ip("-n", ns, "addr", "add", f"{address}/{PREFIX}", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
    except BaseException:
        remove(lab)
        raise
    return lab


def remove(lab: Lab) -> None:
    """Delete every namespace of the lab (their links go with them); missing ones are fine."""
    for ns in lab.namespaces():
        subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=10)


def holds(ns: str, address: str) -> bool:
    """Does `address` sit on a link of namespace `ns` (the VIP on its master)?"""
    done = subprocess.run(["ip", "-n", ns, "-4", "-o", "addr"], capture_output=True, text=True, timeout=10)
    return f" {address}/" in done.stdout
