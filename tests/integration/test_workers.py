"""Master and workers (issue 11): one edge across the workers, and signals like nginx.

Every edge here runs `--workers 2`: a master, its admin listener, two worker processes on one socket.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from edgecdn.control import admin_client
from edgecdn.control.signing import generate_key, parse_key
from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import admin_url, get, metric, session, start_edge

KEY = generate_key("workers")
PID = re.compile(r"listening on http://\S+ \(admin \S+\) pid (\d+)")
BOUND_S = 30.0  # every wait below gives up (and fails) after this


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[OriginClient, Proc]]:
    root = tmp_path_factory.mktemp("root")
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    cache = tmp_path_factory.mktemp("cache")
    edge = start_edge(origin_proc.url, cache, "--workers", "2", "--admin-key", KEY, "--no-access-log")
    try:
        yield OriginClient(origin_proc, root), edge
    finally:
        edge.stop()
        origin_proc.stop()


def fresh_connections() -> aiohttp.ClientSession:
    """Every request on a new connection, all at once: the kernel spreads them over both workers."""
    return aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        auto_decompress=False,
        trust_env=False,
        timeout=aiohttp.ClientTimeout(total=60),
    )


async def many(s: aiohttp.ClientSession, url: str, n: int) -> list[bytes]:
    async def one() -> bytes:
        async with s.get(url) as r:
            assert r.status == 200
            return await r.read()

    return list(await asyncio.gather(*(one() for _ in range(n))))


async def test_a_purge_is_in_effect_in_every_worker_before_it_is_answered(
    stack: tuple[OriginClient, Proc],
) -> None:
    origin, edge = stack
    (origin.root / "obj.txt").write_text("version one")
    async with fresh_connections() as s:
        first = await many(s, edge.url + "/obj.txt", 1)
        warm = await many(s, edge.url + "/obj.txt", 80)  # both workers now hold it in memory
        (origin.root / "obj.txt").write_text("version two")
        async with session() as admin:
            purged = await metric(admin, admin_url(edge), "edgecdn_purged_objects_total")
            answer = await admin_client.send(
                admin, parse_key(KEY), admin_url(edge), "POST", "/_edge/purge", {"urls": ["/obj.txt"]}
            )
            # One object for the edge, though the master and both workers each dropped their copies.
            assert await metric(admin, admin_url(edge), "edgecdn_purged_objects_total") - purged == 1
        assert answer.ok, answer.body
        after = await many(s, edge.url + "/obj.txt", 80)
        body = b"version three"
        push = admin_client.signed_headers(parse_key(KEY), "PUT", "/_edge/push/obj.txt", body)
        push["Cache-Control"] = "max-age=600"
        async with s.put(admin_url(edge) + "/_edge/push/obj.txt", data=body, headers=push) as r:
            assert r.status == 200, await r.text()
        pushed = await many(s, edge.url + "/obj.txt", 80)
    assert set(first + warm) == {b"version one"}
    assert set(after) == {b"version two"}  # no worker answered from its memory tier
    assert set(pushed) == {b"version three"}  # nor an older copy after a push
    assert origin.hits("/obj.txt") == 2


async def test_an_unsafe_request_in_one_worker_invalidates_in_every_worker(
    stack: tuple[OriginClient, Proc],
) -> None:
    """RFC 9111 §4.4 edge-wide: a POST answered by one worker drops the URL from the others' memory."""
    _, edge = stack
    url = edge.url + "/_test/echo?t=invalidate-workers"

    async def gets(s: aiohttp.ClientSession, phase: str, n: int) -> set[str]:
        headers = {"X-Set-Cache-Control": "max-age=300", "X-Test-Echo": "X-Test-Phase", "X-Test-Phase": phase}

        async def one() -> str:
            async with s.get(url, headers=headers) as r:
                assert r.status == 200
                return r.headers["X-Echo-X-Test-Phase"]

        return set(await asyncio.gather(*(one() for _ in range(n))))

    async with fresh_connections() as s:
        assert await gets(s, "one", 80) == {"one"}  # both workers hold it in memory
        async with s.post(url) as r:
            assert r.status == 200
        seen: set[str] = set()
        for _ in range(100):  # the other worker hears of it through the master (bounded wait)
            seen = await gets(s, "two", 40)
            if seen == {"two"}:
                break
            await asyncio.sleep(0.02)
    assert seen == {"two"}  # no worker answers the invalidated object any more


async def test_a_herd_across_workers_causes_one_origin_request(stack: tuple[OriginClient, Proc]) -> None:
    origin, edge = stack
    path = "/_test/blob/50000?t=worker-herd"
    sent = 0
    all_sent = asyncio.Event()

    async def on_sent(*_: object) -> None:
        nonlocal sent
        sent += 1
        if sent == 200:
            all_sent.set()

    trace = aiohttp.TraceConfig()
    trace.on_request_headers_sent.append(on_sent)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(force_close=True, limit=0),
        trace_configs=[trace],
        timeout=aiohttp.ClientTimeout(total=60),
    ) as s:

        async def one() -> bytes:
            async with s.get(edge.url + path, headers={"X-Test-Gate": "wherd"}) as r:
                assert r.status == 200
                return await r.read()

        tasks = [asyncio.create_task(one()) for _ in range(200)]
        await origin.await_gate("wherd", 1)
        async with asyncio.timeout(BOUND_S):
            await all_sent.wait()  # every request is on its way to a worker
        for _ in range(20):  # a second fill (another worker's) would reach the gate meanwhile
            assert await asyncio.to_thread(origin.gate_waiting, "wherd") == 1
        origin.release("wherd")
        bodies = await asyncio.gather(*tasks)
    assert sent == 200
    assert {len(b) for b in bodies} == {50000} and len(set(bodies)) == 1
    assert origin.hits(path) == 1


def workers_of(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


async def test_a_worker_that_dies_is_started_again_logged_and_counted(
    stack: tuple[OriginClient, Proc],
) -> None:
    origin, edge = stack
    (origin.root / "alive.txt").write_text("alive")
    before = workers_of(edge.pid)
    assert len(before) == 2
    os.kill(before[0], signal.SIGKILL)
    await asyncio.to_thread(wait_for, edge, rf"worker \d \(pid {before[0]}\) exited with code -9")
    async with session() as s:
        for _ in range(int(BOUND_S / 0.02)):  # until the new worker is up (bounded)
            now = workers_of(edge.pid)
            if len(now) == 2 and before[0] not in now:
                break
            await asyncio.sleep(0.02)
        restarts = await metric(s, admin_url(edge), "edgecdn_worker_restarts_total")
        async with fresh_connections() as f:
            assert set(await many(f, edge.url + "/alive.txt", 20)) == {b"alive"}
    assert before[1] in now and len(now) == 2
    assert restarts == 1


async def test_the_replay_cache_is_the_edges_and_outlives_a_reload(stack: tuple[OriginClient, Proc]) -> None:
    _, edge = stack
    body = b'{"urls": ["/replayed"]}'
    signed = admin_client.signed_headers(parse_key(KEY), "POST", "/_edge/purge", body)
    signed["Content-Type"] = "application/json"
    answers = []
    async with fresh_connections() as s:
        for reload in (False, False, True):
            if reload:
                edge.signal(signal.SIGHUP)
                await asyncio.to_thread(wait_for, edge, r"reload: the old workers have exited")
            async with s.post(admin_url(edge) + "/_edge/purge", data=body, headers=signed) as r:
                answers.append((r.status, (await r.json()).get("detail")))
    assert answers[0][0] == 200
    assert answers[1:] == [(401, "replayed"), (401, "replayed")]


async def test_metrics_are_the_whole_edges_summed_over_workers(stack: tuple[OriginClient, Proc]) -> None:
    origin, edge = stack
    (origin.root / "counted.txt").write_text("counted")

    async def scrape() -> dict[str, float]:
        async with session() as s, s.get(admin_url(edge) + "/metrics") as r:
            text = await r.text()
        return {
            f"{sample.name}{sorted(sample.labels.items())}": sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def requests(samples: dict[str, float]) -> float:
        return sum(v for k, v in samples.items() if k.startswith("edgecdn_requests_total"))

    async def stats() -> dict[str, Any]:
        async with session() as s, s.get(admin_url(edge) + "/_edge/stats") as r:
            return dict(await r.json())

    before, stats_before = await scrape(), await stats()
    async with fresh_connections() as f:
        await many(f, edge.url + "/counted.txt", 40)
    after, stats_after = await scrape(), await stats()
    assert requests(after) - requests(before) == 40  # counted in the workers, shown by the master
    assert stats_after["requests"]["total"] - stats_before["requests"]["total"] == 40  # so do the stats
    assert stats_after["store"]["memory"]["items"] >= 1  # a worker's memory tier holds it
    assert {v for k, v in after.items() if k.startswith("edgecdn_build_info")} == {1.0}  # not summed


# -- signals -----------------------------------------------------------------------------------------


def wait_for(proc: Proc, pattern: str, count: int = 1) -> None:
    """Until `pattern` appears `count` times in the edge's stderr or stdout (bounded)."""
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        text = proc.stderr_text() + "\n".join(proc.stdout_lines)
        if len(re.findall(pattern, text)) >= count:
            return
        time.sleep(0.02)
    pytest.fail(f"{pattern!r} x{count} not seen:\n{proc.stderr_text()}")


class Load:
    """Clients in a loop until stopped: fresh connections and keep-alive ones, every answer checked."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.ok = 0
        self.failed: list[str] = []
        self.retried = 0
        self.stop = asyncio.Event()

    async def run(self, clients: int = 4) -> None:
        await asyncio.gather(*(self._client(i % 2 == 0) for i in range(clients)))

    async def _client(self, keep_alive: bool) -> None:
        connector = aiohttp.TCPConnector(force_close=not keep_alive, limit=1)
        async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as s:
            for _ in range(100_000):  # bounded; stopped long before
                if self.stop.is_set():
                    return
                await self._one(s, keep_alive)

    async def _one(self, s: aiohttp.ClientSession, keep_alive: bool) -> None:
        for attempt in range(2):
            try:
                async with s.get(self.url) as r:
                    body = await r.read()
                if r.status == 200 and body == b"steady":
                    self.ok += 1
                else:
                    self.failed.append(f"{r.status} {body[:40]!r}")
                return
            except aiohttp.ServerDisconnectedError as e:
                # An idle keep-alive connection the server closed as the request went out: HTTP/1.1
                # clients retry that once on a new connection (RFC 9112 §9.3.1). A fresh one never fails.
                if keep_alive and attempt == 0:
                    self.retried += 1
                    continue
                self.failed.append(repr(e))
                return
            except (aiohttp.ClientError, OSError, TimeoutError) as e:
                self.failed.append(repr(e))
                return


def current_pid(edge: Proc) -> int:
    return int([m.group(1) for line in edge.stdout_lines if (m := PID.search(line))][-1])


@pytest.mark.parametrize("workers", [2, 1], ids=["master-and-workers", "single-process"])
async def test_reloads_and_a_restart_under_load_fail_no_request(tmp_path: Path, workers: int) -> None:
    """Two SIGHUPs (a new config each) and a SIGUSR2 while clients loop: no failed request, and a 50 MiB
    download that began before the first reload completes. One process: SIGHUP hands the sockets over."""
    root = tmp_path / "root"
    root.mkdir()
    (root / "steady.txt").write_text("steady")
    config = tmp_path / "edge.toml"
    config.write_text(f"[server]\nworkers = {workers}\n")
    # Master: the reload's own line. One process: its successor is listening (the same line as USR2).
    reloaded = r"reload: 2 new workers serving" if workers > 1 else r"restart: the new edge .* is listening"
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0", "--test-hooks")
    origin = OriginClient(origin_proc, root)
    edge = start_edge(origin_proc.url, tmp_path / "cache", "-c", str(config), "--no-access-log")
    try:
        load = Load(edge.url + "/steady.txt")
        running = asyncio.create_task(load.run())
        big = "/_test/blob/52428800?t=during-reload"
        async with session() as s:
            download = asyncio.create_task(get(s, edge.url + big, **{"X-Test-Gate-After": "big:1048576"}))
            await origin.await_gate("big", 1)  # 1 MiB of 50 MiB sent: the download is in progress
            began = time.monotonic()
            os.kill(current_pid(edge), signal.SIGHUP)
            await asyncio.to_thread(wait_for, edge, reloaded, 1)
            first_reload = time.monotonic() - began
            origin.release("big")  # the old worker (or process) serving it finishes after the reload
            config.write_text(f'[server]\nworkers = {workers}\n[cache]\nmemory_size = "64MiB"\n')
            await asyncio.to_thread(wait_for, edge, r"listening on .* pid", 2 if workers == 1 else 1)
            os.kill(current_pid(edge), signal.SIGHUP)
            await asyncio.to_thread(wait_for, edge, reloaded, 2)
            await asyncio.to_thread(wait_for, edge, r"listening on .* pid", 3 if workers == 1 else 1)
            os.kill(current_pid(edge), signal.SIGUSR2)
            await asyncio.to_thread(
                wait_for, edge, r"restart: the new edge .* is listening", 1 if workers > 1 else 3
            )
            got = await download
        # A few answers from the newest processes, on new connections: the download's keep-alive
        # connection belonged to a process that drained and closes it once idle (clients retry that,
        # RFC 9112 §9.3.1; the load loop above counts such retries).
        async with session() as s:
            for _ in range(20):
                assert (await get(s, edge.url + "/steady.txt")).status == 200
        load.stop.set()
        await running
    finally:
        edge.stop()  # the first process; its successors are in its process group and go with it
        origin_proc.stop()
    assert got.status == 200 and len(got.body) == 52428800
    assert load.failed == [], load.failed[:5]
    assert load.ok > 0
    print(f"reload took {first_reload:.2f} s; {load.ok} requests, {load.retried} keep-alive retries")


@pytest.fixture
def logged_edge(tmp_path: Path) -> Iterator[tuple[Proc, Path, Path]]:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    config = tmp_path / "edge.toml"
    log = tmp_path / "access.log"
    config.write_text(f'[server]\nworkers = 2\naccess_log = "{log}"\n')
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0")
    edge = start_edge(origin_proc.url, tmp_path / "cache", "-c", str(config))
    try:
        yield edge, config, log
    finally:
        edge.stop()
        origin_proc.stop()


def lines_in(path: Path, n: int) -> None:
    deadline = time.monotonic() + BOUND_S
    while time.monotonic() < deadline:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.02)
    pytest.fail(f"{path}: fewer than {n} lines")


async def test_an_invalid_config_on_hup_or_usr2_keeps_the_edge_serving_and_usr1_reopens_the_log(
    logged_edge: tuple[Proc, Path, Path],
) -> None:
    edge, config, log = logged_edge
    async with session() as s:
        assert (await get(s, edge.url + "/a.txt")).status == 200
        config.write_text("[server]\nworkers = 2\nno_such_key = 1\n")
        edge.signal(signal.SIGHUP)
        await asyncio.to_thread(wait_for, edge, r"reload: the config is invalid.*no_such_key")
        assert (await get(s, edge.url + "/a.txt")).status == 200
        edge.signal(signal.SIGUSR2)  # the new edge refuses the same config and exits 2
        await asyncio.to_thread(wait_for, edge, r"restart: the new edge .* did not start; this one keeps")
        assert (await get(s, edge.url + "/a.txt")).status == 200
        assert edge.returncode is None
        await asyncio.to_thread(lines_in, log, 2)
        log.rename(log.with_suffix(".1"))  # as logrotate does, then its postrotate: kill -USR1
        edge.signal(signal.SIGUSR1)
        await asyncio.to_thread(wait_for, edge, r"access log: reopening", 3)  # the master and 2 workers
        for _ in range(8):  # both workers answer some (fresh connections)
            async with fresh_connections() as f:
                await many(f, edge.url + "/a.txt", 4)
    await asyncio.to_thread(lines_in, log, 32)
    assert len(log.with_suffix(".1").read_text().splitlines()) == 2  # nothing after the move went there


async def test_sigterm_says_draining_then_stops_the_workers_and_exits_0(tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    (root / "a.txt").write_text("a")
    (tmp_path / "edge.toml").write_text("[server]\nworkers = 2\ndrain_delay = 30\n")
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0")
    edge = start_edge(
        origin_proc.url, tmp_path / "cache", "--no-access-log", "-c", str(tmp_path / "edge.toml")
    )
    try:
        workers = workers_of(edge.pid)
        edge.signal(signal.SIGTERM)
        async with fresh_connections() as s:
            for _ in range(int(BOUND_S / 0.02)):  # every worker's public health turns 503 "draining"
                async with s.get(edge.url + "/_edge/health") as r:
                    states = [r.status, await r.text()]
                if states[0] == 503:
                    break
                await asyncio.sleep(0.02)
            assert states == [503, '{"status":"draining"}']
            assert set(await many(s, edge.url + "/a.txt", 20)) == {b"a"}  # still serving meanwhile
        edge.signal(signal.SIGQUIT)  # do not wait out drain_delay: stop now
        code = await asyncio.to_thread(edge.popen.wait, BOUND_S)
    finally:
        edge.stop()
        origin_proc.stop()
    assert code == 0
    assert not any(os.path.exists(f"/proc/{pid}") for pid in workers)  # noqa: ASYNC240 - /proc


async def test_systemd_hears_ready_reloading_ready_stopping_from_the_master(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify.sock"))
    notify.settimeout(BOUND_S)
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    root = tmp_path / "root"
    root.mkdir()
    origin_proc = Proc("origin", "serve", str(root), "--listen", "127.0.0.1:0")
    edge = start_edge(origin_proc.url, tmp_path / "cache", "--workers", "2", "--no-access-log")
    try:
        heard = [notify.recv(256)]  # the origin's READY=1
        heard.append(notify.recv(256))
        edge.signal(signal.SIGHUP)
        heard += [notify.recv(256), notify.recv(256)]
        edge.signal(signal.SIGTERM)
        code = await asyncio.to_thread(edge.popen.wait, BOUND_S)
        heard.append(notify.recv(256))
    finally:
        edge.stop()
        origin_proc.stop()
        notify.close()
    assert heard[:2] == [b"READY=1", b"READY=1"]
    assert re.fullmatch(rb"RELOADING=1\nMONOTONIC_USEC=\d+", heard[2])
    assert heard[3:] == [b"READY=1", b"STOPPING=1"]
    assert code == 0
