"""Where the CPU went during one run: the client, the server tree, each core, other people.

Read from /proc before and after a run; nothing here starts or stops a process.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from processes import CLIENT_CORE, SERVER_CORE


@dataclass(frozen=True)
class Cpu:
    """CPU shares over one run, 1.0 = one core busy for the whole run."""

    client: float  # load generator user+sys (os.wait4)
    server: float  # server process tree user+sys (/proc/PID/stat)
    server_core: float  # core 0 busy incl. softirq (/proc/stat): loopback TCP work lands here too
    client_core: float  # core 1 busy incl. softirq
    steal: float  # both cores: time the hypervisor took away; high values make a run noisy
    others: float  # user processes not the bench's (other people's tests...): noisy if > ~0.05
    others_top: tuple[str, ...] = ()  # the busiest of them, "name[pid] share"


@dataclass(frozen=True)
class ProcTable:
    """User+system CPU seconds and parent of every process, read from /proc at one moment."""

    cpu_s: dict[int, float]
    reaped_s: dict[int, float]  # of its children that exited and were waited for
    parent: dict[int, int]
    name: dict[int, str]

    @classmethod
    def read(cls) -> ProcTable:
        cpu_s, reaped_s, parent, name = {}, {}, {}, {}
        tick = os.sysconf("SC_CLK_TCK")
        for entry in os.scandir("/proc"):
            if not entry.name.isdigit():
                continue
            try:
                stat = Path(entry.path, "stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            pid = int(entry.name)
            parent[pid] = int(fields[1])
            cpu_s[pid] = (int(fields[11]) + int(fields[12])) / tick
            reaped_s[pid] = (int(fields[13]) + int(fields[14])) / tick
            name[pid] = stat[stat.index("(") + 1 : stat.rindex(")")]
        return cls(cpu_s, reaped_s, parent, name)

    def tree(self, root: int) -> set[int]:
        """A process and its live descendants."""
        found, todo = set(), [root]
        while todo:
            pid = todo.pop()
            found.add(pid)
            todo.extend(child for child, parent in self.parent.items() if parent == pid)
        return found

    def tree_s(self, root: int) -> float:
        return sum(self.cpu_s.get(pid, 0.0) for pid in self.tree(root))

    def others_since(self, before: ProcTable, skip: set[int]) -> dict[str, float]:
        """CPU seconds since `before` of every process outside `skip`, with its short-lived
        children (reaped in between: over-counted if they started earlier; fine for a noise gauge).
        """
        used = {}
        for pid, cpu in self.cpu_s.items():
            if pid in skip:
                continue
            spent = cpu - before.cpu_s.get(pid, 0.0) + self.reaped_s[pid] - before.reaped_s.get(pid, 0.0)
            if spent > 0:
                used[f"{self.name[pid]}[{pid}]"] = spent
        return used


BUSY, STEAL, TOTAL = range(3)


def core_times() -> dict[str, tuple[int, int, int]]:
    """(busy, steal, total) jiffies per core from /proc/stat."""
    out = {}
    for line in Path("/proc/stat").read_text().splitlines():
        name, *values = line.split()
        if name.startswith("cpu") and name != "cpu":
            v = [int(x) for x in values[:8]]
            user, nice, system, idle, iowait, irq, softirq, steal = v + [0] * (8 - len(v))
            busy = user + nice + system + irq + softirq
            out[name.removeprefix("cpu")] = (busy, steal, busy + idle + iowait + steal)
    return out


@dataclass(frozen=True)
class Snapshot:
    """Every process's and every core's CPU time at one moment."""

    procs: ProcTable
    cores: dict[str, tuple[int, int, int]]

    @classmethod
    def take(cls) -> Snapshot:
        return cls(ProcTable.read(), core_times())


def cpu_between(before: Snapshot, after: Snapshot, server_pid: int, client_s: float, wall: float) -> Cpu:
    """The shares of one run, given the client's own user+sys seconds (os.wait4)."""
    server_cpu = after.procs.tree_s(server_pid) - before.procs.tree_s(server_pid)
    # Kernel threads (ksoftirqd, kworkers) carry the bench's own loopback traffic too.
    skip = after.procs.tree(server_pid) | after.procs.tree(2) | {os.getpid()}
    others = after.procs.others_since(before.procs, skip)
    top = sorted(others, key=others.__getitem__, reverse=True)[:3]

    def share(core: str, index: int) -> float:
        total = after.cores[core][TOTAL] - before.cores[core][TOTAL]
        return (after.cores[core][index] - before.cores[core][index]) / total if total else 0.0

    return Cpu(
        client=client_s / wall,
        server=server_cpu / wall,
        server_core=share(SERVER_CORE, BUSY),
        client_core=share(CLIENT_CORE, BUSY),
        steal=(share(SERVER_CORE, STEAL) + share(CLIENT_CORE, STEAL)) / 2,
        # Reaped children count whole, so cap at what the cores could have given them.
        others=min(sum(others.values()), len(after.cores) * wall - server_cpu - client_s) / wall,
        others_top=tuple(f"{name} {others[name] / wall:.0%}" for name in top),
    )
