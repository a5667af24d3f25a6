"""Import layers (DESIGN.md §3) and the purity of the cache brain (STYLE.md rules 1 and 2), read from the AST.

Allowed imports point down the flow: serve → fetch → cache, control → policy → http; config, errors,
clock, metrics and build_info are leaves. process, cli and __main__ sit on top and may import anything.
Inside a layer the modules import each other without a cycle (TYPE_CHECKING imports count: they are a
cycle waiting to happen).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import edgecdn

PACKAGE = Path(edgecdn.__file__).resolve().parent
REPO = PACKAGE.parent

LEAVES = frozenset(
    {"edgecdn.config", "edgecdn.errors", "edgecdn.clock", "edgecdn.metrics", "edgecdn.build_info"}
)
HTTP, POLICY, CACHE, CONTROL, FETCH, SERVE = (
    "edgecdn.http",
    "edgecdn.policy",
    "edgecdn.cache",
    "edgecdn.control",
    "edgecdn.fetch",
    "edgecdn.serve",
)
SUBPACKAGES = frozenset({HTTP, POLICY, CACHE, CONTROL, FETCH, SERVE, "edgecdn.process"})

# Layer → the layers its modules may import from edgecdn. A layer missing here is unconstrained.
ALLOWED: dict[str, frozenset[str]] = {
    HTTP: frozenset({HTTP}),
    POLICY: frozenset({HTTP, POLICY}) | LEAVES,
    CACHE: frozenset({POLICY, HTTP, CACHE}) | LEAVES,
    CONTROL: frozenset({POLICY, HTTP, CONTROL}) | LEAVES,
    FETCH: frozenset({CACHE, POLICY, HTTP, FETCH}) | LEAVES,
    SERVE: frozenset({FETCH, CACHE, CONTROL, POLICY, HTTP, SERVE}) | LEAVES,
    **{leaf: frozenset({"edgecdn.errors", "edgecdn.build_info"}) for leaf in LEAVES},
    # DESIGN.md §3: the reference origin shares the HTTP vocabulary and control messages, not the runtime.
    "origin": frozenset({HTTP, CONTROL, "edgecdn.errors", "edgecdn.build_info"}),
}

PURE_LAYERS = (HTTP, POLICY)
IMPURE_MODULES = frozenset({"aiohttp", "asyncio", "diskcache", "aiofiles", "os", "time"})
CLOCK_READS = frozenset(
    {
        ("time", "time"),
        ("time", "monotonic"),
        ("time", "perf_counter"),
        ("datetime", "now"),
        ("datetime", "utcnow"),
        ("datetime", "today"),
        ("date", "today"),
        ("clock", "now"),
        ("clock", "monotonic"),
    }
)


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def all_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted([*PACKAGE.rglob("*.py"), *(REPO / "origin").rglob("*.py")])}


MODULES = all_modules()


def layer(module: str) -> str:
    """The layer a module belongs to: a leaf module, a subpackage, or the module itself."""
    if module in LEAVES:
        return module
    head = ".".join(module.split(".")[:2])
    if head in SUBPACKAGES:
        return head
    if module.split(".")[0] == "origin":
        return "origin"
    return module


def imported(tree: ast.AST, module: str, *, is_package: bool) -> list[tuple[str, int]]:
    """(absolute module name, line) for every import statement, relative ones resolved."""
    out: list[tuple[str, int]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((alias.name, node.lineno) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = module if is_package else module.rpartition(".")[0]
                for _ in range(node.level - 1):
                    package = package.rpartition(".")[0]
                base = f"{package}.{base}" if base else package
            for alias in node.names:
                # `from edgecdn import clock` imports the module edgecdn.clock.
                sub = f"{base}.{alias.name}"
                out.append((sub if sub in MODULES else base, node.lineno))
    return out


def layer_violations(module: str, source: str, *, is_package: bool = False, where: str = "") -> list[str]:
    allowed = ALLOWED.get(layer(module))
    if allowed is None:
        return []
    out = []
    for name, line in imported(ast.parse(source), module, is_package=is_package):
        if name.split(".")[0] != "edgecdn" or layer(name) == layer(module):
            continue
        if layer(name) not in allowed:
            out.append(
                f"{where}:{line}: {module} imports {name}; {layer(module)} may import only {sorted(allowed)}"
            )
    return out


def import_graph(sources: dict[str, tuple[str, bool]]) -> dict[str, set[str]]:
    """module → the edgecdn/origin modules of its layer it imports; sources: module → (source, is_package)."""
    graph: dict[str, set[str]] = {}
    for module, (source, is_package) in sources.items():
        graph[module] = {
            name
            for name, _ in imported(ast.parse(source), module, is_package=is_package)
            if name in sources and name != module and layer(name) == layer(module)
        }
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Every import cycle, each once, as the modules in order (a depth-first walk, Tarjan-free)."""
    found: list[list[str]] = []
    seen: set[frozenset[str]] = set()

    def walk(module: str, path: list[str]) -> None:
        for target in sorted(graph.get(module, ())):
            if target in path:
                loop = path[path.index(target) :]
                if frozenset(loop) not in seen:
                    seen.add(frozenset(loop))
                    found.append([*loop, target])
            elif len(path) < 12:
                walk(target, [*path, target])

    for start in sorted(graph):
        walk(start, [start])
    return found


def dotted(node: ast.expr) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{dotted(node.value)}.{node.attr}"
    return ""


def purity_violations(source: str, *, where: str = "") -> list[str]:
    out: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import | ast.ImportFrom):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            else:
                names = [node.module] if node.module and not node.level else []
            impure = [name for name in names if name.split(".")[0] in IMPURE_MODULES]
            out.extend(f"{where}:{node.lineno}: imports {name}" for name in impure)
        elif isinstance(node, ast.Call):
            parts = tuple(dotted(node.func).split(".")[-2:])
            if parts in CLOCK_READS:
                out.append(f"{where}:{node.lineno}: reads the clock with {'.'.join(parts)}()")
    return out


def where(path: Path) -> str:
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in ALLOWED), ids=str)
def test_imports_point_down_the_layers(module: str) -> None:
    path = MODULES[module]
    source = path.read_text(encoding="utf-8")
    assert layer_violations(module, source, is_package=path.name == "__init__.py", where=where(path)) == []


def test_no_import_cycle_inside_a_layer() -> None:
    sources = {m: (p.read_text(encoding="utf-8"), p.name == "__init__.py") for m, p in MODULES.items()}
    assert cycles(import_graph(sources)) == []


CYCLE_CASES = [
    (
        "serve-circle-through-type-checking",
        {
            "edgecdn.serve.app": "from edgecdn.serve.follow import F\n",
            "edgecdn.serve.follow": "from edgecdn.serve.purge import run\n",
            "edgecdn.serve.purge": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
            "    from edgecdn.serve.app import Edge\n",
        },
        [["edgecdn.serve.app", "edgecdn.serve.follow", "edgecdn.serve.purge", "edgecdn.serve.app"]],
    ),
    (
        "chain-without-a-cycle",
        {"edgecdn.cache.store": "from edgecdn.cache import disk\n", "edgecdn.cache.disk": "import os\n"},
        [],
    ),
    (
        "across-layers-is-the-layer-rule-not-a-cycle",
        {"edgecdn.fetch.x": "from edgecdn.cache import y\n", "edgecdn.cache.y": "import edgecdn.fetch.x\n"},
        [],
    ),
]


@pytest.mark.parametrize(
    ("sources", "expected"), [c[1:] for c in CYCLE_CASES], ids=[c[0] for c in CYCLE_CASES]
)
def test_cycle_checker(sources: dict[str, str], expected: list[list[str]]) -> None:
    assert cycles(import_graph({m: (src, False) for m, src in sources.items()})) == expected


@pytest.mark.parametrize("module", sorted(m for m in MODULES if layer(m) in PURE_LAYERS), ids=str)
def test_cache_brain_is_pure(module: str) -> None:
    path = MODULES[module]
    assert purity_violations(path.read_text(encoding="utf-8"), where=where(path)) == []


def test_every_layer_is_walked() -> None:
    seen = {layer(m) for m in MODULES}
    assert {HTTP, POLICY, CACHE, CONTROL, FETCH, SERVE, *LEAVES} <= seen
    assert len([m for m in MODULES if layer(m) in PURE_LAYERS]) >= 10


# The checkers themselves: each must catch what it is for, with the line.
LAYER_CASES = [
    ("http-imports-policy", "edgecdn.http.x", "import os\nfrom edgecdn.policy import decide\n", [2]),
    ("http-imports-leaf", "edgecdn.http.x", "from edgecdn.config import CacheConfig\n", [1]),
    ("http-imports-itself", "edgecdn.http.x", "from edgecdn.http.fields import get_one\n", []),
    ("policy-imports-cache", "edgecdn.policy.x", "\n\nfrom edgecdn.cache.store import Store\n", [3]),
    ("policy-relative-import-of-cache", "edgecdn.policy.x", "from ..cache import store\n", [1]),
    ("policy-imports-root-package", "edgecdn.policy.x", "import edgecdn\n", [1]),
    ("policy-imports-leaves", "edgecdn.policy.x", "from edgecdn import clock, config, errors, metrics\n", []),
    ("policy-import-inside-function", "edgecdn.policy.x", "def f():\n    import edgecdn.fetch.client\n", [2]),
    ("cache-imports-fetch", "edgecdn.cache.x", "import edgecdn.fetch.client\n", [1]),
    ("cache-imports-control", "edgecdn.cache.x", "from edgecdn.control import signing\n", [1]),
    ("fetch-imports-cache", "edgecdn.fetch.x", "from edgecdn.cache.store import Store\n", []),
    ("fetch-imports-serve", "edgecdn.fetch.x", "from edgecdn.serve.app import Edge\n", [1]),
    ("serve-imports-process", "edgecdn.serve.x", "from edgecdn.process.runner import run\n", [1]),
    ("serve-imports-cli", "edgecdn.serve.x", "from edgecdn import cli\n", [1]),
    (
        "serve-imports-everything-below",
        "edgecdn.serve.x",
        "import edgecdn.fetch.client, edgecdn.control.signing\n",
        [],
    ),
    ("config-imports-errors", "edgecdn.config", "from edgecdn.errors import ConfigError\n", []),
    ("leaf-imports-leaf", "edgecdn.metrics", "from edgecdn import clock\n", [1]),
    ("leaf-imports-http", "edgecdn.errors", "from edgecdn.http import fields\n", [1]),
    ("process-unconstrained", "edgecdn.process.x", "from edgecdn.serve.app import Edge\n", []),
    ("origin-imports-runtime", "origin.x", "from edgecdn.cache.store import Store\n", [1]),
    ("origin-imports-http", "origin.x", "from edgecdn.http.dates import format_http_date\n", []),
]


@pytest.mark.parametrize(
    ("module", "source", "lines"), [c[1:] for c in LAYER_CASES], ids=[c[0] for c in LAYER_CASES]
)
def test_layer_checker(module: str, source: str, lines: list[int]) -> None:
    found = layer_violations(module, source, where="f.py")
    assert [int(v.split(":")[1]) for v in found] == lines, found


PURITY_CASES = [
    ("imports-os", "import os\n", 1),
    ("imports-os-path", "import os.path\n", 1),
    ("imports-from-time", "x = 1\nfrom time import monotonic\n", 1),
    ("imports-asyncio", "import asyncio\n", 1),
    ("imports-aiohttp-submodule", "from aiohttp import web\n", 1),
    ("imports-diskcache", "import diskcache\n", 1),
    ("imports-aiofiles", "import aiofiles\n", 1),
    ("calls-time-time", "import time\nnow = time.time()\n", 2),
    ("calls-datetime-now", "import datetime\nnow = datetime.datetime.now()\n", 1),
    ("calls-clock-now", "from edgecdn import clock\nnow = clock.now()\n", 1),
    ("pure", "import re\nfrom email.utils import parsedate_tz\nx = re.compile('a').search('b')\n", 0),
]


@pytest.mark.parametrize(("source", "count"), [c[1:] for c in PURITY_CASES], ids=[c[0] for c in PURITY_CASES])
def test_purity_checker(source: str, count: int) -> None:
    assert len(purity_violations(source)) == count
