"""The origin pool: which origin a request goes to, each origin's health, and the one retry loop.

Rules of this file: the choice is the pure balancer's (policy/balance.py) and the verdicts are the pure
health functions' (policy/health.py); this file only feeds them the clock and outcomes, logs and counts
every state change, and sends. A request is retried on the next origin only while it is idempotent,
nothing of its answer reached anyone, the tries are not used up and the overall deadline has not passed.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterable
from typing import Any

from edgecdn import clock
from edgecdn.config import OriginConfig, OriginServer
from edgecdn.errors import ConfigError, OriginError, OriginTimeout
from edgecdn.fetch.client import OriginClient, OriginResponse, status_error, with_cdn_loop
from edgecdn.http.fields import Headers
from edgecdn.metrics import Metrics
from edgecdn.policy.balance import OriginSpec, Policy, make_balancer
from edgecdn.policy.health import (
    HealthConfig,
    OriginHealth,
    Transition,
    is_up,
    record_failure,
    record_probe,
    record_success,
    refresh,
)

log = logging.getLogger("edgecdn.origin")


class OriginPool:
    def __init__(
        self, servers: tuple[OriginServer, ...], cfg: OriginConfig, metrics: Metrics | None = None
    ) -> None:
        if not servers:
            raise ConfigError("origins: at least one origin is required (--origin URL)")
        self.cfg = cfg
        self.metrics = metrics or Metrics()
        self.servers = servers
        self.urls = tuple(s.url for s in servers)
        self._index = {url: i for i, url in enumerate(self.urls)}
        specs = [OriginSpec(s.url, s.weight, s.backup, s.max_conns) for s in servers]
        self.balancer = make_balancer(Policy(cfg.policy), specs)
        self.health_cfg = HealthConfig(
            max_fails=cfg.max_fails,
            fail_window_s=cfg.fail_window,
            down_s=cfg.down_time,
            rise=cfg.rise,
            fall=cfg.fall,
        )
        self._health = [OriginHealth() for _ in servers]
        self.conns = [0] * len(servers)
        for url in self.urls:
            self.metrics.origin_up.labels(url).set(1)

    # -- health ------------------------------------------------------------------------------------

    def up(self, *, now: float | None = None) -> list[bool]:
        """Each origin's verdict now; a penalty that ran out is reported (logged, counted) here."""
        now = clock.monotonic() if now is None else now
        for i, state in enumerate(self._health):
            self._apply(i, *refresh(state, self.health_cfg, now))
        return [is_up(state, self.health_cfg, now) for state in self._health]

    def report(self, origin: str, ok: bool) -> None:
        """Passive health input: the outcome of one request to `origin`."""
        i = self._index.get(origin)
        if i is None:
            return
        now = clock.monotonic()
        if ok:
            self._apply(i, *record_success(self._health[i], self.health_cfg, now))
        else:
            self._apply(i, *record_failure(self._health[i], self.health_cfg, now))

    def probe(self, origin: str, ok: bool) -> None:
        """Active health input: one health check ended."""
        i = self._index[origin]
        self.metrics.origin_probes.labels(origin, "ok" if ok else "fail").inc()
        self._apply(i, *record_probe(self._health[i], self.health_cfg, ok, clock.monotonic()))

    def _apply(self, i: int, state: OriginHealth, change: Transition | None) -> None:
        self._health[i] = state
        if change is None:
            return
        url = self.urls[i]
        log.warning("origin %s is %s (%s)", url, change.after.value, change.reason.value)
        self.metrics.origin_transitions.labels(url, change.after.value, change.reason.value).inc()
        self.metrics.origin_up.labels(url).set(1 if change.after.value == "up" else 0)

    def states(self) -> list[dict[str, Any]]:
        """Each origin's state for /_edge/health."""
        now = clock.monotonic()
        up = self.up(now=now)
        out = []
        for i, server in enumerate(self.servers):
            h = self._health[i]
            penalty = h.down_until - now if h.down_until is not None and h.down_until > now else 0.0
            out.append(
                {
                    "url": server.url,
                    "state": "up" if up[i] else "down",
                    "backup": server.backup,
                    "weight": server.weight,
                    "active_requests": self.conns[i],
                    "recent_failures": len(h.fail_times),
                    "down_for_s": round(penalty, 3),
                    "probe": "down" if h.probe_down else "up",
                }
            )
        return out

    def _failed(self, origin: str, error: str, started: float) -> None:
        """One request to `origin` failed: health input, its latency and its error, counted."""
        self.report(origin, ok=False)
        self.metrics.origin_seconds.labels(origin).observe(clock.monotonic() - started)
        self.metrics.origin_requests.labels(error).inc()
        self.metrics.origin_errors.labels(origin, error).inc()

    # -- choosing and sending ----------------------------------------------------------------------

    def order(self, key: str, client_ip: str | None) -> tuple[str, ...]:
        """Origins to try for one request, best first; every origin appears once."""
        picked = self.balancer.order(up=self.up(), conns=self.conns, key=key, client_ip=client_ip or "")
        return tuple(self.urls[i] for i in picked)

    def _done(self, i: int) -> None:
        self.conns[i] -= 1

    async def send(
        self,
        client: OriginClient,
        method: str,
        target: str,
        headers: Headers,
        *,
        key: str,
        client_ip: str | None,
        body: AsyncIterable[bytes] | None = None,
        idempotent: bool = True,
        origins: tuple[str, ...] | None = None,
    ) -> OriginResponse:
        """Send to the best origin, moving on while the failure is retryable (the one retry loop).

        A response with a status in `retry_statuses` is released and the next origin asked, unless it
        is the last try: then the client gets that answer. `origins` overrides the balancer's order.
        """
        order = origins if origins is not None else self.order(key, client_ip)
        tries = min(self.cfg.tries or len(order), len(order))
        deadline = clock.monotonic() + self.cfg.retry_deadline
        headers = with_cdn_loop(headers, self.cfg.cdn_id)
        error: OriginError = OriginTimeout(f"no origin answered within {self.cfg.retry_deadline}s")
        for n, origin in enumerate(order[:tries]):
            remaining = deadline - clock.monotonic()
            if remaining <= 0:
                break
            if n:
                self.metrics.origin_retries.labels(order[n - 1], error.detail).inc()
            i = self._index[origin]
            self.conns[i] += 1
            started = clock.monotonic()
            try:
                async with asyncio.timeout(remaining):
                    resp = await client.send(origin, method, target, headers, body)
            except TimeoutError:
                self.conns[i] -= 1
                self._failed(origin, "OriginTimeout", started)
                error = OriginTimeout(f"{origin}: retry deadline of {self.cfg.retry_deadline}s passed")
                break
            except OriginError as e:
                self.conns[i] -= 1
                self._failed(origin, type(e).__name__, started)
                error = e
                if not e.retryable or not idempotent:
                    break
                continue
            except BaseException:  # cancelled (the client left): the slot is free again
                self.conns[i] -= 1
                raise
            resp.on_done = functools.partial(self._done, i)
            self.metrics.origin_seconds.labels(origin).observe(clock.monotonic() - started)
            self.metrics.origin_requests.labels(f"{resp.status // 100}xx").inc()
            if resp.status not in self.cfg.retry_statuses:
                self.report(origin, ok=True)
                return resp
            self.report(origin, ok=False)
            self.metrics.origin_errors.labels(origin, f"status-{resp.status}").inc()
            if not idempotent or n == tries - 1 or clock.monotonic() >= deadline:
                return resp
            resp.release()
            error = status_error(resp.status, origin)
        raise error
