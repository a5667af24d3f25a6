"""Configuration: frozen dataclasses loaded from strict TOML (STYLE.md rule 6).

Rules of this file: an unknown key is an error that names the key and suggests the closest one; sizes and
durations accept numbers (bytes, seconds) or human forms ("10GiB", "30s"); each bound sits by its field.
"""

from __future__ import annotations

import dataclasses
import difflib
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


def _size(lo: int = 0) -> dict[str, Any]:
    return {"parse": parse_size, "min": lo}


def _secs(lo: float = 0.0) -> dict[str, Any]:
    return {"parse": parse_duration, "min": lo}


@dataclass(frozen=True)
class TtlRule:
    """Operator TTL rule: `default` applies when the origin gave no explicit freshness, `override` always."""

    prefix: str | None = None
    regex: str | None = None
    ttl: float = field(default=0.0, metadata=_secs())
    mode: str = field(default="default", metadata={"choices": ("default", "override")})
    stale_while_revalidate: float | None = field(default=None, metadata=_secs())
    stale_if_error: float | None = field(default=None, metadata=_secs())


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
    rules: tuple[TtlRule, ...] = ()


@dataclass(frozen=True)
class OriginConfig:
    connect_timeout: float = field(default=5.0, metadata=_secs(0.001))
    first_byte_timeout: float = field(default=30.0, metadata=_secs(0.001))
    between_bytes_timeout: float = field(default=30.0, metadata=_secs(0.001))
    max_connections: int = field(default=256, metadata={"min": 1})


@dataclass(frozen=True)
class ServerConfig:
    listen: str = "127.0.0.1:8080"
    admin_listen: str = "127.0.0.1:8081"
    header_timeout: float = field(default=10.0, metadata=_secs(0.001))
    keepalive_timeout: float = field(default=75.0, metadata=_secs())
    max_header_size: int = field(default=8190, metadata=_size(256))
    access_log: bool = True
    uvloop: bool = True


@dataclass(frozen=True)
class Config:
    origins: tuple[str, ...] = ()
    server: ServerConfig = ServerConfig()
    origin: OriginConfig = OriginConfig()
    cache: CacheConfig = CacheConfig()


_FIELD_PARSERS: Mapping[str, Callable[[object, str], object]] = {"origins": parse_origin_url}


def load_config(path: str | Path) -> Config:
    """Read and validate a TOML file; every problem is a ConfigError naming the key."""
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    config: Config = build(Config, data, "")
    validate(config)
    return config


def validate(config: Config) -> None:
    """Cross-field checks that a single field's bounds cannot express."""
    if config.cache.memory_object_max > config.cache.memory_size:
        raise ConfigError("cache.memory_object_max: must not exceed cache.memory_size")
    for i, rule in enumerate(config.cache.rules):
        if (rule.prefix is None) == (rule.regex is None):
            raise ConfigError(f"cache.rules[{i}]: set exactly one of prefix or regex")
        if rule.regex is not None:
            try:
                re.compile(rule.regex)
            except re.error as e:
                raise ConfigError(f"cache.rules[{i}].regex: {e}") from None
    parse_hostport(config.server.listen, "server.listen")
    parse_hostport(config.server.admin_listen, "server.admin_listen")


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
    if f.name == "rules":
        if not isinstance(raw, list):
            raise ConfigError(f"{path}: expected an array of tables ([[{path}]])")
        return tuple(build(TtlRule, r, f"{path}[{i}].") for i, r in enumerate(raw))
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
