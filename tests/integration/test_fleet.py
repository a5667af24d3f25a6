"""A fleet stood up for real by `edgecdn fleet up`: edges behind HAProxy (consistent URI hash) → shield →
origin, and as root the keepalived VIP pair in namespaces on 127.0.10.0/24 that the fleet creates and removes.

Rules of this file: a tool the test needs (haproxy, nginx, keepalived, ip) or root fails the test in CI
(.ci/run installs them) and skips it, loudly, elsewhere; every fleet is stopped by its pid and its
namespaces and their processes are removed in `finally`, pass or fail; every client loop is bounded.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from edgecdn.control.fleet import load_fleet, render_all
from edgecdn.process.fleet import haproxy_command, server_states
from tests.integration.conftest import OriginClient, Proc
from tests.integration.edge_client import get, run_module, session
from tests.integration.test_deploy import tool

OBJECTS = int(os.environ.get("FLEET_OBJECTS", "1500"))  # 3000: ~27 s on a busy 2-core box
SERVED_BY = "X-Served-By"
WAIT_S = 10.0
LOOPBACK = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never an http_proxy


def needs_root() -> None:
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the VIP pair needs root (network namespaces): run CI as root")
        pytest.skip("not root: network namespaces unavailable")


def description(tmp_path: Path, edges: int, *, balance_factor: int = 150) -> Path:
    """A fleet of `edges` edges; fleet up replaces every address, so these are placeholders."""
    rows = "".join(
        f'[[edges]]\nname = "edge{i}"\npublic = "10.0.1.{i}:8080"\nadmin = "10.0.1.{i}:8081"\n\n'
        for i in range(1, edges + 1)
    )
    path = tmp_path / "fleet.toml"
    path.write_text(
        f"""origins = ["http://127.0.0.1:9"]
drain_delay = "1s"
[front]
check_interval = "200ms"
hash_balance_factor = {balance_factor}
served_by_header = "{SERVED_BY}"
[shield]
public = "10.0.1.100:8080"
admin = "10.0.1.100:8081"
[vip]
advert_int = "100ms"
[[balancers]]
name = "lb1"
address = "127.0.10.1"
priority = 150
[[balancers]]
name = "lb2"
address = "127.0.10.2"
priority = 100
{rows}"""
    )
    return path


@dataclasses.dataclass
class Fleet:
    proc: Proc
    state: dict[str, Any]
    origin: OriginClient

    @property
    def front(self) -> str:
        return str(self.state["front"])

    def node(self, name: str) -> dict[str, str]:
        return dict(self.state["nodes"][name])

    def pid(self, name: str) -> int:
        return int(self.state["processes"][name]["pid"])

    @property
    def socket(self) -> str:
        return str(next(iter(self.state["haproxy"].values()))["socket"])

    def states(self) -> dict[str, str]:
        return server_states(self.socket)

    def wait_state(self, edge: str, prefix: str) -> float:
        """Seconds until HAProxy reports `edge` as `prefix` (UP, DOWN, MAINT); fails after WAIT_S."""
        start = time.monotonic()
        while not self.states()[edge].startswith(prefix):
            if time.monotonic() - start > WAIT_S:
                pytest.fail(f"{edge}: {self.states()[edge]} after {WAIT_S} s, wanted {prefix}")
            time.sleep(0.01)
        return time.monotonic() - start


FleetFactory = Callable[..., Fleet]


def _remove_namespaces(state: dict[str, Any]) -> None:
    """Belt and braces: kill what still runs in the fleet's namespaces (by pid) and delete them."""
    if not state.get("netns"):
        return
    prefix = state["netns"]["prefix"]
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
    for ns in [n for n in names if n.startswith(prefix + "-")]:
        pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
        for pid in pids:
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@pytest.fixture
def fleet_up(tmp_path: Path) -> Iterator[FleetFactory]:
    """`fleet_up(files, edges=3, hold=(), netns=False)`: an origin root with `files`, then the whole fleet."""
    tool("haproxy")
    started: list[Fleet] = []

    def start(
        files: dict[str, bytes], edges: int = 3, hold: tuple[str, ...] = (), netns: bool = False, **kw: Any
    ) -> Fleet:
        root = tmp_path / "root"
        root.mkdir()
        for name, body in files.items():
            (root / name).write_bytes(body)
        run_dir = tmp_path / "run"
        argv = ["fleet", "up", str(description(tmp_path, edges, **kw)), "--origin-root", str(root)]
        argv += ["--origin-test-hooks", "--run-dir", str(run_dir), "--netns", "on" if netns else "off"]
        for name in hold:
            argv += ["--hold", name]
        proc = Proc("edgecdn", *argv, timeout=90)
        state = json.loads((run_dir / "state.json").read_text())
        fleet = Fleet(proc, state, OriginClient(proc, root))
        fleet.origin.url = state["origin"]
        started.append(fleet)
        return fleet

    try:
        yield start
    finally:
        for fleet in started:
            try:
                assert fleet.proc.stop() == 0, fleet.proc.stderr_text()
            finally:
                _remove_namespaces(fleet.state)
        for fleet in started:  # nothing it made outlives it
            for name in fleet.state["processes"]:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(fleet.pid(name), 0)
                    pytest.fail(f"{name} (pid {fleet.pid(name)}) outlived the fleet")


def objects(n: int, prefix: str = "o") -> dict[str, bytes]:
    return {f"{prefix}{i:05d}.txt": f"object {i}\n".encode() for i in range(n)}


async def through(s: aiohttp.ClientSession, base: str, names: list[str], conc: int = 8) -> dict[str, Any]:
    """GET every name through `base` with `conc` at once: name → (status, served by, X-Cache, body)."""
    sem = asyncio.Semaphore(conc)

    async def one(name: str) -> tuple[str, Any]:
        async with sem:
            got = await get(s, f"{base}/{name}")
            return name, (got.status, got.headers.get(SERVED_BY, ""), got.x_cache, got.body)

    return dict(await asyncio.gather(*(one(n) for n in names)))


# -- rendered configs pass the real tools ------------------------------------------------------------


@pytest.mark.haproxy
def test_rendered_configs_pass_haproxy_nginx_and_keepalived_checks(tmp_path: Path) -> None:
    example = Path(__file__).resolve().parents[2] / "deploy" / "fleet" / "fleet.example.toml"
    fleet = load_fleet(example)
    fleet = dataclasses.replace(
        fleet,
        front=dataclasses.replace(fleet.front, stats_socket=str(tmp_path / "s.sock")),
        balancers=tuple(
            dataclasses.replace(b, check_script=str(tmp_path / b.name / "check_haproxy.sh"))
            for b in fleet.balancers
        ),
    )
    for name, text in render_all(fleet, "fleet.example.toml").items():
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_text(text)
        (tmp_path / name).chmod(0o755)
    done = subprocess.run([tool("haproxy"), "-c", "-f", str(tmp_path / "haproxy.cfg")], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    (tmp_path / "nginx.conf").write_text(
        f"pid {tmp_path}/nginx.pid;\nerror_log stderr;\nevents {{}}\n"
        f"http {{ access_log off; include {tmp_path}/nginx-front.conf; }}\n"
    )
    nginx = [
        tool("nginx"),
        "-t",
        "-q",
        "-e",
        "stderr",
        "-p",
        str(tmp_path),
        "-c",
        str(tmp_path / "nginx.conf"),
    ]
    done = subprocess.run(nginx, capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    for lb in ("lb1", "lb2"):
        conf = tmp_path / lb / "keepalived.conf"
        done = subprocess.run([tool("keepalived"), "-t", "-f", str(conf)], capture_output=True)
        assert done.returncode == 0, done.stdout.decode() + done.stderr.decode()


# -- locality --------------------------------------------------------------------------------------


@pytest.mark.haproxy
async def test_each_object_lives_on_one_edge_and_an_edge_leaving_moves_only_its_share(
    fleet_up: FleetFactory,
) -> None:
    # hash_balance_factor 0: the exact mapping (the load bound diverts requests by design under load).
    fleet = fleet_up(objects(OBJECTS), balance_factor=0)
    names = sorted(objects(OBJECTS))
    async with session() as s:
        first = await through(s, fleet.front, names)
        assert {v[0] for v in first.values()} == {200}
        owner = {n: v[1] for n, v in first.items()}
        # The origin saw each object once for the whole fleet (the edges pull through the shield).
        hits = await asyncio.to_thread(fleet.origin.all_hits)
        assert {hits.get(f"/{n}") for n in names} == {1}
        share = {e: sum(o == e for o in owner.values()) / OBJECTS for e in ("edge1", "edge2", "edge3")}
        print(f"\nshares of {OBJECTS} objects: {share}")
        assert all(0.2 < v < 0.47 for v in share.values()), share
        # Each object is cached on exactly its owner (only-if-cached: 504 where it is not stored).
        for name in names[:: max(1, OBJECTS // 150)]:
            for edge in ("edge1", "edge2", "edge3"):
                got = await get(
                    s, f"{fleet.node(edge)['public']}/{name}", **{"Cache-Control": "only-if-cached"}
                )
                assert got.status == (200 if edge == owner[name] else 504), (name, edge)
        again = await through(s, fleet.front, names)
        assert {n: (v[1], v[2]) for n, v in again.items()} == {n: (owner[n], "HIT") for n in names}

        haproxy_command(fleet.socket, "disable server edges/edge1")
        fleet.wait_state("edge1", "MAINT")
        without = await through(s, fleet.front, names)
        moved = [n for n in names if without[n][1] != owner[n]]
        assert sorted(moved) == sorted(n for n in names if owner[n] == "edge1")
        print(f"edge1 leaving moved {len(moved)} of {OBJECTS} objects ({len(moved) / OBJECTS:.0%})")

        haproxy_command(fleet.socket, "enable server edges/edge1")
        fleet.wait_state("edge1", "UP")
        back = await through(s, fleet.front, names)
        assert {n: v[1] for n, v in back.items()} == owner
        assert {back[n][2] for n in moved} == {"HIT"}  # edge1 kept its objects while out


# -- dead and draining edges -----------------------------------------------------------------------


async def client_loop(
    s: aiohttp.ClientSession, base: str, names: list[str], at: int, act: threading.Thread
) -> list[tuple[str, int]]:
    """Passes over `names`, 4 requests at a time; `act` starts once `at` requests were answered and the
    loop ends with the first pass after `act` finished (at most 40 passes). Returns the failures (name,
    status; 0 for a transport error)."""
    failures: list[tuple[str, int]] = []
    done = 0
    sem = asyncio.Semaphore(4)

    async def one(name: str) -> None:
        nonlocal done
        async with sem:
            try:
                got = await get(s, f"{base}/{name}")
                if got.status != 200:
                    failures.append((name, got.status))
            except aiohttp.ClientError:
                failures.append((name, 0))
            done += 1
            if done == at:
                act.start()

    for _ in range(40):
        await asyncio.gather(*(one(n) for n in names))
        if act.ident is not None and not act.is_alive():
            break
    await asyncio.to_thread(act.join, WAIT_S)
    return failures


def health(url: str) -> tuple[int, str]:
    try:
        with LOOPBACK.open(url + "/_edge/health", timeout=1) as r:
            return r.status, json.loads(r.read())["status"]
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())["status"]
    except OSError:
        return 0, "unreachable"


@pytest.mark.haproxy
async def test_a_killed_edge_leaves_the_pool_and_no_request_fails(fleet_up: FleetFactory) -> None:
    fleet = fleet_up(objects(200))
    names = sorted(objects(200))
    took: list[float] = []

    def kill() -> None:
        os.kill(fleet.pid("edge2"), signal.SIGKILL)
        took.append(fleet.wait_state("edge2", "DOWN"))

    async with session() as s:
        await through(s, fleet.front, names)
        failures = await client_loop(s, fleet.front, names, at=150, act=threading.Thread(target=kill))
    assert failures == []
    assert took, "HAProxy never marked the killed edge DOWN"
    print(f"\nedge2 SIGKILLed: out of the pool after {took[0]:.2f} s, 0 failed requests")


@pytest.mark.haproxy
async def test_a_draining_edge_says_so_first_and_no_request_fails(fleet_up: FleetFactory) -> None:
    fleet = fleet_up(objects(200))
    names = sorted(objects(200))
    seen: list[tuple[tuple[int, str], str]] = []

    def stop_edge2() -> None:
        """SIGTERM, then until edge2 exits: what its health said and what HAProxy thought of it."""
        edge2 = fleet.pid("edge2")
        os.kill(edge2, signal.SIGTERM)
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            try:
                os.kill(edge2, 0)
            except ProcessLookupError:
                return
            seen.append((health(fleet.node("edge2")["public"]), fleet.states()["edge2"]))
            time.sleep(0.02)

    async with session() as s:
        await through(s, fleet.front, names)
        failures = await client_loop(s, fleet.front, names, at=100, act=threading.Thread(target=stop_edge2))
    assert failures == []
    assert (503, "draining") in [h for h, _ in seen]
    # HAProxy took edge2 out while it still answered (draining), before it stopped accepting.
    assert [h for h, state in seen if state.startswith("DOWN") and h == (503, "draining")]
    print(f"\ndrain: 0 failed requests; HAProxy states seen: {sorted({st for _, st in seen})}")


# -- purge and joining ------------------------------------------------------------------------------


@pytest.mark.haproxy
async def test_fleet_purge_reaches_every_edge_and_the_shield(fleet_up: FleetFactory) -> None:
    fleet = fleet_up({"news.txt": b"old\n"})
    async with session() as s:
        assert (await get(s, fleet.front + "/news.txt")).body == b"old\n"
        for edge in ("edge1", "edge2", "edge3"):  # the old object on every edge, not only its owner
            assert (await get(s, fleet.node(edge)["public"] + "/news.txt")).body == b"old\n"
        (fleet.origin.root / "news.txt").write_bytes(b"new\n")
        admins = [a for n in fleet.state["nodes"].values() for a in ("--edge", n["admin"]) if not n["held"]]
        done = await asyncio.to_thread(
            run_module, "edgecdn", "purge", *admins, "/news.txt", admin_key=fleet.state["admin_key"]
        )
        assert done.returncode == 0, done.stdout + done.stderr
        assert (await get(s, fleet.front + "/news.txt")).body == b"new\n"
        for edge in ("edge1", "edge2", "edge3"):
            assert (await get(s, fleet.node(edge)["public"] + "/news.txt")).body == b"new\n"


@pytest.mark.haproxy
async def test_a_joining_edge_warms_before_haproxy_sends_it_traffic(
    fleet_up: FleetFactory, tmp_path: Path
) -> None:
    files = objects(400) | {"big.bin": os.urandom(32 * 2**20)}
    fleet = fleet_up(files, edges=4, hold=("edge4",))
    names = sorted(files)
    manifest = tmp_path / "manifest.txt"
    manifest.write_text("# hottest objects\n" + "".join(f"/{n}\n" for n in names))
    timeline: list[tuple[str, str]] = []
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            timeline.append((health(fleet.node("edge4")["public"])[1], fleet.states()["edge4"]))
            time.sleep(0.01)

    async with session() as s:
        await through(s, fleet.front, names)  # edges 1-3 own everything while edge4 is away
        assert fleet.states()["edge4"].startswith("DOWN")
        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            edge4 = Proc(
                "edgecdn", "serve", "-c", fleet.node("edge4")["config"], "--warm-from", str(manifest)
            )
            try:
                fleet.wait_state("edge4", "UP")
                stop.set()
                watcher.join()
                after = await through(s, fleet.front, names)
            finally:
                assert edge4.stop() == 0
        finally:
            stop.set()
            watcher.join()
    healths = [h for h, _ in timeline]
    assert "warming" in healths
    # HAProxy never had edge4 UP while it was warming.
    assert not [t for t in timeline if t[0] == "warming" and t[1].startswith("UP")]
    mine = [n for n in names if after[n][1] == "edge4"]
    assert mine, "edge4 got no objects"
    assert {after[n][2] for n in mine} == {"HIT"}  # its first client requests are hits
    print(f"\nedge4 joined warm: {len(mine)} objects moved to it, all hits")


# -- the VIP pair ------------------------------------------------------------------------------------

LOOP = r"""
import json, sys, time, urllib.request
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
n, url = int(sys.argv[1]), sys.argv[2]
for i in range(n):
    t = time.monotonic()
    try:
        with opener.open(url, timeout=1) as r:
            ok = r.status == 200 and r.read() == b"object 1\n"
    except OSError:
        ok = False
    print(json.dumps({"i": i, "t": t, "ok": ok}), flush=True)
    time.sleep(max(0.0, 0.02 - (time.monotonic() - t)))
"""


@pytest.mark.haproxy
@pytest.mark.netns
def test_the_vip_moves_within_a_second_and_the_old_master_returning_causes_no_outage(
    fleet_up: FleetFactory, tmp_path: Path
) -> None:
    needs_root()
    tool("keepalived")
    tool("ip")
    fleet = fleet_up(objects(20), netns=True)
    lb1, lb2 = fleet.state["haproxy"]["lb1"], fleet.state["haproxy"]["lb2"]
    vip = "127.0.10.100"

    def holds(lb: dict[str, str]) -> bool:
        out = subprocess.run(
            ["ip", "-n", lb["ns"], "-4", "-o", "addr"], capture_output=True, text=True
        ).stdout
        return f" {vip}/" in out

    assert holds(lb1) and not holds(lb2)
    client = fleet.state["netns"]["client"]
    loop = subprocess.Popen(
        ["ip", "netns", "exec", client, sys.executable, "-c", LOOP, "300", f"{fleet.front}/o00001.txt"],
        stdout=subprocess.PIPE,
        text=True,
    )
    results: list[dict[str, Any]] = []
    revived: list[subprocess.Popen[bytes]] = []
    try:
        assert loop.stdout is not None
        for line in loop.stdout:
            results.append(json.loads(line))
            if len(results) == 60:  # the master dies: link down, every process in its namespace killed
                died = time.monotonic()
                subprocess.run(["ip", "-n", lb1["ns"], "link", "set", "eth0", "down"], check=True)
                pids = subprocess.run(["ip", "netns", "pids", lb1["ns"]], capture_output=True, text=True)
                for pid in pids.stdout.split():
                    os.kill(int(pid), signal.SIGKILL)
                while not holds(lb2):
                    assert time.monotonic() - died < WAIT_S, "the VIP did not move"
                    time.sleep(0.005)
                moved = time.monotonic() - died
            if len(results) == 160:  # the old master returns
                returned = time.monotonic()
                subprocess.run(["ip", "-n", lb1["ns"], "link", "set", "eth0", "up"], check=True)
                for name in ("haproxy-lb1", "keepalived-lb1"):
                    with open(tmp_path / f"{name}.log", "wb") as log:
                        argv = fleet.state["processes"][name]["argv"]
                        revived.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT))
        assert [p.poll() for p in revived] == [None, None], "the old master did not come back"
    finally:
        loop.wait(30)
        for proc in revived:
            proc.send_signal(signal.SIGTERM)
        for proc in revived:
            proc.wait(10)
    assert len(results) == 300 and loop.returncode == 0
    failed_first = [r for r in results if not r["ok"] and r["t"] < returned]
    failed_after = [r for r in results if not r["ok"] and r["t"] >= returned]
    print(
        f"\nVIP moved in {moved:.2f} s; {len(failed_first)} failed request(s) then, {len(failed_after)} after"
    )
    assert len(failed_first) <= 2
    assert failed_after == []
    assert holds(lb2) and not holds(lb1)  # nopreempt: the VIP stayed where it was
    assert "Entering BACKUP STATE" in (tmp_path / "keepalived-lb1.log").read_text()


@pytest.mark.haproxy
@pytest.mark.netns
def test_a_dead_haproxy_alone_gives_the_vip_away(fleet_up: FleetFactory) -> None:
    """keepalived lives on, but its track_script follows HAProxy's pid file: the VIP moves to lb2."""
    needs_root()
    tool("keepalived")
    fleet = fleet_up(objects(2), netns=True)
    lb1, lb2 = fleet.state["haproxy"]["lb1"], fleet.state["haproxy"]["lb2"]

    def holds(lb: dict[str, str]) -> bool:
        out = subprocess.run(
            ["ip", "-n", lb["ns"], "-4", "-o", "addr"], capture_output=True, text=True
        ).stdout
        return " 127.0.10.100/" in out

    assert holds(lb1)
    os.kill(fleet.pid("haproxy-lb1"), signal.SIGKILL)
    deadline = time.monotonic() + WAIT_S
    while not holds(lb2):
        assert time.monotonic() < deadline, "the VIP stayed with a balancer whose HAProxy is dead"
        time.sleep(0.02)
    assert not holds(lb1)
    os.kill(fleet.pid("keepalived-lb1"), 0)  # keepalived itself still runs
