"""Configuration: frozen dataclasses loaded from strict TOML (STYLE.md rule 6).

Rules of this file: an unknown key is an error that names the key and suggests the closest one; sizes and
durations accept numbers (bytes, seconds) or human forms ("10GiB", "30s"); each bound sits by its field.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from edgecdn.errors import ConfigError

_SIZE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 10**6,
    "mb": 10**6,
    "mib": 2**20,
    "g": 10**9,
    "gb": 10**9,
    "gib": 2**30,
    "t": 10**12,
    "tb": 10**12,
    "tib": 2**40,
}
_TIME_UNITS = {"": 1.0, "ms": 0.001, "s": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_size(value: object, key: str) -> int:
    """`1048576`, `"1MiB"`, `"10 GB"` → bytes."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _SIZE_UNITS:
            return int(float(m.group(1)) * _SIZE_UNITS[m.group(2).lower()])
    raise ConfigError(f'{key}: expected a size like 1048576 or "256MiB", got {value!r}')


MAX_WORKERS = 256


def parse_workers(value: object, key: str) -> int:
    """`4` or `"auto"` (one worker per CPU) → how many worker processes serve the public listener."""
    if value == "auto":
        return max(1, os.cpu_count() or 1)
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_WORKERS:
        return value
    raise ConfigError(f'{key}: expected 1..{MAX_WORKERS} or "auto", got {value!r}')


def parse_duration(value: object, key: str) -> float:
    """`30`, `1.5`, `"30s"`, `"500ms"`, `"5m"` → seconds."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*", value)
        if m and m.group(2).lower() in _TIME_UNITS:
            return float(m.group(1)) * _TIME_UNITS[m.group(2).lower()]
    raise ConfigError(f'{key}: expected a duration like 30 or "30s", got {value!r}')


def parse_hostport(value: str, key: str) -> tuple[str, int]:
    """`127.0.0.1:8080`, `[::1]:0` → (host, port)."""
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not host or int(port) > 65535:
        raise ConfigError(f"{key}: expected HOST:PORT, got {value!r}")
    return host.strip("[]"), int(port)


def parse_origin_url(value: object, key: str) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"https?://[^/\s?#]+/?", value):
        raise ConfigError(f"{key}: expected an origin like http://127.0.0.1:9000, got {value!r}")
    return value.rstrip("/")


def parse_origin(value: object, key: str) -> OriginServer:
    """An origin list entry: a URL string, or a table `{url, weight, backup, max_conns}`."""
    if isinstance(value, dict):
        server: OriginServer = build(OriginServer, value, key + ".")
        return dataclasses.replace(server, url=parse_origin_url(server.url, key + ".url"))
    return OriginServer(parse_origin_url(value, key))


def parse_status(value: object, key: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 100 <= value <= 599:
        raise ConfigError(f"{key}: expected an HTTP status 100..599, got {value!r}")
    return value


def parse_field_pattern(value: object, key: str) -> str:
    """A request field name (RFC 9110 §5.1 token), optionally ending in `*` for a prefix."""
    if not isinstance(value, str) or not re.fullmatch(r"[!#$%&'+.^_`|~0-9A-Za-z-]+\*?", value):
        raise ConfigError(f"{key}: expected a header field name like X-Site or X-Test-*, got {value!r}")
    return value


def _size(lo: int = 0) -> dict[str, Any]:
    return {"parse": parse_size, "min": lo}


def _secs(lo: float = 0.0) -> dict[str, Any]:
    return {"parse": parse_duration, "min": lo}


SET_COOKIE_MODES = ("pass", "strip", "store")


@dataclass(frozen=True)
class TtlRule:
    """Operator TTL rule: `default` applies when the origin gave no explicit freshness, `override` always."""

    prefix: str | None = None
    regex: str | None = None
    ttl: float | None = field(default=None, metadata=_secs())  # None: this rule sets no TTL
    mode: str = field(default="default", metadata={"choices": ("default", "override")})
    stale_while_revalidate: float | None = field(default=None, metadata=_secs())
    stale_if_error: float | None = field(default=None, metadata=_secs())
    set_cookie: str | None = field(default=None, metadata={"choices": SET_COOKIE_MODES})  # None: cache's
    # Spread of the stored lifetime, e.g. 0.1: ±10 %, fixed per path, so objects warmed together
    # do not all expire in the same second (policy/ttl_jitter.py).
    ttl_jitter: float = field(default=0.0, metadata={"min": 0.0, "max": 0.5})
    # Keep matching objects as cache.slice_size ranges fetched on demand (policy/slice.py).
    slice: bool = False


@dataclass(frozen=True)
class CacheConfig:
    dir: str = "./.edgecdn-cache"
    memory_size: int = field(default=256 * 2**20, metadata=_size())
    memory_object_max: int = field(default=2**20, metadata=_size())
    disk_size: int = field(default=10 * 2**30, metadata=_size(1))
    max_object_size: int = field(default=10 * 2**30, metadata=_size(1))
    heuristic_fraction: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    heuristic_max: float = field(default=86400.0, metadata=_secs())
    clock_skew: float = field(default=60.0, metadata=_secs())
    stale_while_revalidate: float = field(default=0.0, metadata=_secs())
    stale_if_error: float = field(default=0.0, metadata=_secs())
    max_variants: int = field(default=16, metadata={"min": 1, "max": 1024})
    hit_for_miss: float = field(default=30.0, metadata=_secs())
    # A failed fill (origin error, 5xx) is the answer for its key this long (nginx proxy_cache_valid 500 1s).
    error_ttl: float = field(default=1.0, metadata=_secs())
    # Memory objects >= 64 KiB keep their body file open and are sent with sendfile(2) from it (no copy).
    memory_sendfile: bool = True
    # Last path segment of content-hash URLs: a regex with (?P<hash>...) capturing 16 hex digits of xxh3-64;
    # "" is the built-in `name.<hash>.ext`, "off" turns verification and immutability off.
    versioned_pattern: str = ""
    rules: tuple[TtlRule, ...] = ()
    # Responses with Set-Cookie: "pass" (never stored), "strip" (stored and served without Set-Cookie),
    # "store" (stored and served with it, as RFC 9111 §3 allows a shared cache). Rules may override it.
    set_cookie: str = field(default="pass", metadata={"choices": SET_COOKIE_MODES})
    # Paths whose rule says `slice = true` are fetched and stored as ranges of this size (nginx slice).
    slice_size: int = field(default=2**20, metadata={"parse": parse_size, "min": 4096, "max": 2**30})


@dataclass(frozen=True)
class OriginServer:
    """One entry of `origins`; `backup` and `max_conns` (0 = unlimited) as in nginx `server`."""

    url: str = ""
    weight: int = field(default=1, metadata={"min": 1, "max": 1000})
    backup: bool = False
    max_conns: int = field(default=0, metadata={"min": 0})


POLICIES = (
    "failover",
    "round_robin",
    "weighted_round_robin",
    "least_conn",
    "weighted_least_conn",
    "source_hash",
    "uri_hash",
)


@dataclass(frozen=True)
class OriginConfig:
    connect_timeout: float = field(default=5.0, metadata=_secs(0.001))
    first_byte_timeout: float = field(default=30.0, metadata=_secs(0.001))
    between_bytes_timeout: float = field(default=30.0, metadata=_secs(0.001))
    max_connections: int = field(default=256, metadata={"min": 1})
    policy: str = field(default="failover", metadata={"choices": POLICIES})
    # Passive health (nginx max_fails / fail_timeout): max_fails failures within fail_window: down.
    max_fails: int = field(default=3, metadata={"min": 0})
    fail_window: float = field(default=10.0, metadata=_secs(0.001))
    down_time: float = field(default=10.0, metadata=_secs(0.001))
    # Active health: GET health_path every health_interval; "" turns active checks off.
    health_path: str = ""
    health_interval: float = field(default=5.0, metadata=_secs(0.05))
    health_timeout: float = field(default=2.0, metadata=_secs(0.01))
    health_status: int = field(default=200, metadata={"min": 100, "max": 599})
    rise: int = field(default=2, metadata={"min": 1, "max": 100})
    fall: int = field(default=3, metadata={"min": 1, "max": 100})
    # Retries: the next origin for idempotent requests before any byte reached the client.
    retry_statuses: tuple[int, ...] = (502, 503, 504)
    tries: int = field(default=0, metadata={"min": 0, "max": 100})  # 0: each origin once
    retry_deadline: float = field(default=60.0, metadata=_secs(0.001))
    cdn_id: str = "edgecdn"  # this edge's CDN-Loop token (RFC 8586); chained tiers need distinct ids
    # Request fields a cacheable request forwards besides Accept, Accept-Encoding and Authorization; each
    # must be keyed by the origin's Vary. A name ending in "*" is a prefix ("X-Test-*").
    forward_headers: tuple[str, ...] = ()


def parse_access_log(value: object, key: str) -> bool | str:
    """Where access lines go: true/"stdout", "stderr", a file path; false/"off" for none."""
    if isinstance(value, bool) or value in ("stdout", "stderr"):
        return value
    if value == "off":
        return False
    if isinstance(value, str) and "/" in value and "\0" not in value:
        return value
    raise ConfigError(f'{key}: expected true or false, "stdout", "stderr", "off" or a path like ./access.log')


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    admin_listen: str = "127.0.0.1:8081"
    header_timeout: float = field(default=10.0, metadata=_secs(0.001))
    keepalive_timeout: float = field(default=75.0, metadata=_secs())
    body_timeout: float = field(default=300.0, metadata=_secs(0.001))  # a whole request body, public side
    max_header_size: int = field(default=8190, metadata=_size(256))
    # true (stdout), false / "off", "stdout", "stderr" or a file path (one containing "/").
    access_log: bool | str = field(default=True, metadata={"parse": parse_access_log})
    uvloop: bool = True
    # Scale-out: on SIGTERM /_edge/health answers 503 "draining" this long (still serving) so the balancer
    # takes the edge out before it stops accepting; warm_from: a manifest fetched before health says 200.
    drain_delay: float = field(default=0.0, metadata=_secs())
    warm_from: str = ""
    warm_timeout: float = field(default=60.0, metadata=_secs(0.001))
    # Master and workers (issue 11): 1 is one process (no master); N or "auto" (one per CPU) workers.
    workers: int = field(default=1, metadata={"parse": parse_workers})
    # TLS on `listen` (both PEM paths or neither; read when the listener starts): ALPN h2 and http/1.1.
    tls_cert: str = ""
    tls_key: str = ""
    redirect_listen: str = ""  # with TLS: a plain HTTP listener answering 308 to https://


ADMIN_KEY_RE = re.compile(r"[A-Za-z0-9_-]{1,32}:[A-Za-z0-9_-]{43}")  # the shape `edgecdn keygen` prints


def parse_admin_key(value: object, key: str) -> str:
    """One `KID:SECRET` admin key; the error never repeats the value (it is a secret)."""
    if not isinstance(value, str) or not ADMIN_KEY_RE.fullmatch(value.strip()):
        raise ConfigError(f"{key}: expected KID:SECRET as printed by `edgecdn keygen`")
    return value.strip()


@dataclass(frozen=True)
class AdminConfig:
    """The signed control API on the admin listener."""

    keys: tuple[str, ...] = field(default=(), repr=False)  # KID:SECRET; several at once for rotation
    signature_window: float = field(
        default=300.0, metadata={"parse": parse_duration, "min": 1.0, "max": 3600.0}
    )
    max_body: int = field(default=2**20, metadata={"parse": parse_size, "min": 1, "max": 2**30})


@dataclass(frozen=True)
class AccessRule:
    """Per path prefix: signed URLs checked at the edge, or the client token forwarded (token traverse)."""

    prefix: str = "/"
    mode: str = field(default="signed", metadata={"choices": ("signed", "token_traverse")})
    token_param: str = "token"  # token_traverse: this query parameter goes upstream, never into the key
    token_header: str = ""  # token_traverse: read the token from this header instead


@dataclass(frozen=True)
class AccessConfig:
    """Signed client URLs (`?expires=&kid=&sig=`) and token traverse, by path prefix (first match wins)."""

    keys: tuple[str, ...] = field(default=(), repr=False)  # KID:SECRET URL-signing keys
    paths: tuple[AccessRule, ...] = ()


@dataclass(frozen=True)
class SyncConfig:
    """Catch-up from the origins' change logs (GET /_origin/changes)."""

    poll_interval: float = field(default=0.0, metadata=_secs())  # 0: do not follow change logs


@dataclass(frozen=True)
class PrefetchConfig:
    """The prefetch task API (POST /_edge/prefetch): bounded work toward the origins."""

    concurrency: int = field(default=8, metadata={"min": 1, "max": 1024})  # fills at once, all tasks
    queue: int = field(default=10_000, metadata={"min": 1, "max": 1_000_000})  # URLs waiting, all tasks
    max_urls: int = field(default=10_000, metadata={"min": 1, "max": 100_000})  # per request
    keep_results: float = field(default=3600.0, metadata=_secs(1.0))  # a finished task stays queryable


@dataclass(frozen=True)
class JitterRule:
    """Clients asking GET /_edge/jitter for a path under `prefix` wait up to `window`."""

    prefix: str = "/"
    window: float = field(default=0.0, metadata=_secs())


@dataclass(frozen=True)
class JitterConfig:
    window: float = field(default=0.0, metadata=_secs())  # paths no rule matches
    rules: tuple[JitterRule, ...] = field(default=(), metadata={"row": JitterRule})


@dataclass(frozen=True)
class ShedConfig:
    """Overload shedding: more fills than `max_fills` at once: new misses get 503 + Retry-After."""

    max_fills: int = field(default=0, metadata={"min": 0})  # 0: never shed
    retry_after_min: float = field(default=1.0, metadata=_secs(1.0))
    retry_after_max: float = field(default=10.0, metadata=_secs(1.0))


@dataclass(frozen=True)
class Config:
    origins: tuple[OriginServer, ...] = ()
    server: ServerConfig = ServerConfig()
    origin: OriginConfig = OriginConfig()
    cache: CacheConfig = CacheConfig()
    admin: AdminConfig = AdminConfig()
    sync: SyncConfig = SyncConfig()
    access: AccessConfig = AccessConfig()
    prefetch: PrefetchConfig = PrefetchConfig()
    jitter: JitterConfig = JitterConfig()
    shed: ShedConfig = ShedConfig()


_FIELD_PARSERS: Mapping[str, Callable[[object, str], object]] = {
    "origins": parse_origin,
    "retry_statuses": parse_status,
    "forward_headers": parse_field_pattern,
    "keys": parse_admin_key,
}


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; every problem is a ConfigError naming the key."""
    config: Config = build(Config, read_toml(path), "")
    validate(config)
    return config


def read_toml(path: str | Path) -> dict[str, Any]:
    """A TOML file as a dict; a missing, unreadable or invalid file is one ConfigError line."""
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None


def validate(config: Config) -> None:
    """Cross-field checks that a single field's bounds cannot express."""
    if config.cache.memory_object_max > config.cache.memory_size:
        raise ConfigError("cache.memory_object_max: must not exceed cache.memory_size")
    for i, rule in enumerate(config.cache.rules):
        if (rule.prefix is None) == (rule.regex is None):
            raise ConfigError(f"cache.rules[{i}]: set exactly one of prefix or regex")
        if rule.mode == "override" and rule.ttl is None:
            raise ConfigError(f'cache.rules[{i}]: mode = "override" needs a ttl')
        if rule.regex is not None:
            try:
                re.compile(rule.regex)
            except re.error as e:
                raise ConfigError(f"cache.rules[{i}].regex: {e}") from None
    pattern = config.cache.versioned_pattern
    if pattern not in ("", "off"):
        try:
            compiled = re.compile(pattern)
        except re.error as e:
            raise ConfigError(f"cache.versioned_pattern: {e}") from None
        if "hash" not in compiled.groupindex:
            raise ConfigError("cache.versioned_pattern: needs a named group (?P<hash>...)")
    public = parse_hostport(config.server.listen, "server.listen")
    admin = parse_hostport(config.server.admin_listen, "server.admin_listen")
    if _same_address(public, admin):
        raise ConfigError("server.admin_listen: must differ from server.listen (the admin API is separate)")
    if bool(config.server.tls_cert) != bool(config.server.tls_key):
        raise ConfigError("server.tls_cert, server.tls_key: give both or neither")
    if config.server.redirect_listen:
        if not config.server.tls_cert:
            raise ConfigError("server.redirect_listen: needs server.tls_cert (it redirects to https)")
        if config.server.workers > 1:
            raise ConfigError(
                "server.redirect_listen: not with server.workers > 1 yet; use one worker or redirect in front"
            )
        redirect = parse_hostport(config.server.redirect_listen, "server.redirect_listen")
        if any(_same_address(redirect, other) for other in (public, admin)):
            raise ConfigError(
                "server.redirect_listen: must differ from server.listen and server.admin_listen"
            )
    if not re.fullmatch(r"[A-Za-z0-9._:-]{1,64}", config.origin.cdn_id):
        raise ConfigError("origin.cdn_id: expected a token (letters, digits, . _ : -)")
    if config.origin.health_path and not config.origin.health_path.startswith("/"):
        raise ConfigError("origin.health_path: must start with /")
    for i, acc in enumerate(config.access.paths):
        if not acc.prefix.startswith("/"):
            raise ConfigError(f"access.paths[{i}].prefix: must start with /")
        if acc.mode == "signed" and not config.access.keys:
            raise ConfigError(f"access.paths[{i}]: signed URLs need access.keys (make one: edgecdn keygen)")
    urls = [o.url for o in config.origins]
    if len(set(urls)) != len(urls):
        raise ConfigError("origins: an origin is listed twice")
    for i, jr in enumerate(config.jitter.rules):
        if not jr.prefix.startswith("/"):
            raise ConfigError(f"jitter.rules[{i}].prefix: must start with /")
    if config.shed.retry_after_min > config.shed.retry_after_max:
        raise ConfigError("shed.retry_after_min: must not exceed shed.retry_after_max")
    kids = [k.partition(":")[0] for k in config.admin.keys]
    if len(set(kids)) != len(kids):
        raise ConfigError("admin.keys: a key id is given twice")


def _same_address(a: tuple[str, int], b: tuple[str, int]) -> bool:
    """Would both listeners bind the same port? Port 0 is ephemeral; a wildcard host overlaps any host."""
    wildcard = ("", "0.0.0.0", "::", "*")
    return a[1] == b[1] != 0 and (a[0] == b[0] or a[0] in wildcard or b[0] in wildcard)


def build(cls: type[Any], data: object, prefix: str) -> Any:
    """Build dataclass `cls` from a TOML table, strictly."""
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'}: expected a table")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values: dict[str, Any] = {}
    for key, raw in data.items():
        path = f"{prefix}{key}"
        if key not in fields:
            close = difflib.get_close_matches(key, fields, n=1)
            hint = f"; did you mean {close[0]}?" if close else ""
            raise ConfigError(f"{path}: unknown key{hint}")
        values[key] = _convert(fields[key], raw, path)
    return cls(**values)


def _convert(f: dataclasses.Field[Any], raw: object, path: str) -> object:
    default = f.default if f.default is not dataclasses.MISSING else None
    meta = f.metadata
    if dataclasses.is_dataclass(default):
        return build(type(default), raw, path + ".")
    if f.name in ("rules", "paths"):
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: expected an array of tables ([[{path}]])")
        row = meta.get("row") or (TtlRule if f.name == "rules" else AccessRule)
        return tuple(build(row, r, f"{path}[{i}].") for i, r in enumerate(raw))
    if f.name in _FIELD_PARSERS:
        items = raw if isinstance(raw, list) else [raw]
        return tuple(_FIELD_PARSERS[f.name](v, f"{path}[{i}]") for i, v in enumerate(items))
    value: object
    if "parse" in meta:
        value = meta["parse"](raw, path)
    elif isinstance(default, bool):
        if not isinstance(raw, bool):
            raise ConfigError(f"{path}: expected true or false, got {raw!r}")
        value = raw
    elif isinstance(default, int):
        if not isinstance(raw, int) or isinstance(raw, bool):
            raise ConfigError(f"{path}: expected an integer, got {raw!r}")
        value = raw
    elif isinstance(default, float):
        if not isinstance(raw, (int, float)) or isinstance(raw, bool):
            raise ConfigError(f"{path}: expected a number, got {raw!r}")
        value = float(raw)
    else:
        if not isinstance(raw, str):
            raise ConfigError(f"{path}: expected a string, got {raw!r}")
        value = raw
    if "choices" in meta and value not in meta["choices"]:
        raise ConfigError(f"{path}: must be one of {', '.join(meta['choices'])}, got {value!r}")
    if "min" in meta and isinstance(value, (int, float)) and value < meta["min"]:
        raise ConfigError(f"{path}: must be >= {meta['min']}, got {raw!r}")
    if "max" in meta and isinstance(value, (int, float)) and value > meta["max"]:
        raise ConfigError(f"{path}: must be <= {meta['max']}, got {raw!r}")
    return value
