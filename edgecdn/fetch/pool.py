"""The origin pool: which origin a request goes to. One origin today; the seam for failover and balancers."""

from __future__ import annotations

from edgecdn.errors import ConfigError


class OriginPool:
    def __init__(self, origins: tuple[str, ...]) -> None:
        if not origins:
            raise ConfigError("origins: at least one origin is required (--origin URL)")
        self.origins = origins

    def order(self, key: str, client_ip: str | None) -> tuple[str, ...]:
        """Origins to try for one request, best first."""
        return self.origins

    def report(self, origin: str, ok: bool) -> None:
        """Passive health input: the outcome of one request to `origin`."""
