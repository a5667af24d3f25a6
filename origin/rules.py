"""Cache-Control by path for the reference origin, and its strict TOML config.

Rules of this file: the first matching rule wins; a pattern that starts with ``^`` is a regular
expression searched in the URL path, anything else is a glob matched against the whole path
(``*`` also crosses ``/``). Unknown keys are errors that name the key.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

from edgecdn.control.versioning import parse_versioned

DEFAULT_CACHE_CONTROL = "max-age=60"
IMMUTABLE_CACHE_CONTROL = "public, max-age=31536000, immutable"


_TOP_KEYS = ("default_cache_control", "rules")
_RULE_KEYS = ("pattern", "cache_control")


class ConfigError(ValueError):
    """A config file that cannot be used; the message names the key."""


@dataclass(frozen=True)
class Rule:
    pattern: str
    cache_control: str

    def matches(self, path: str) -> bool:
        if self.pattern.startswith("^"):
            return re.search(self.pattern, path) is not None
        return fnmatchcase(path, self.pattern)


@dataclass(frozen=True)
class Rules:
    rules: tuple[Rule, ...] = ()
    default_cache_control: str = DEFAULT_CACHE_CONTROL

    def cache_control(self, path: str) -> str:
        """The Cache-Control for a URL path: first matching rule, else versioned, else default.

        Versioned is the edge's own test (``name.<16 hex>.ext``), so both sides agree.
        """
        for rule in self.rules:
            if rule.matches(path):
                return rule.cache_control
        if parse_versioned(path) is not None:
            return IMMUTABLE_CACHE_CONTROL
        return self.default_cache_control


def load_rules(path: Path) -> Rules:
    """Read a TOML config file; raises ConfigError with one readable line."""
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror or e}") from None
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path}: invalid TOML: {e}") from None
    return parse_rules(data)


def parse_rules(data: Mapping[str, Any]) -> Rules:
    _check_keys(data, _TOP_KEYS, "")
    default = _string(data, "default_cache_control", "", DEFAULT_CACHE_CONTROL)
    raw_rules = data.get("rules", [])
    if not isinstance(raw_rules, list):
        raise ConfigError("rules: must be an array of tables ([[rules]])")
    rules = []
    for i, raw in enumerate(raw_rules):
        where = f"rules[{i}]."
        if not isinstance(raw, dict):
            raise ConfigError(f"rules[{i}]: must be a table")
        _check_keys(raw, _RULE_KEYS, where)
        pattern = _string(raw, "pattern", where, None)
        if pattern.startswith("^"):
            try:
                re.compile(pattern)
            except re.error as e:
                raise ConfigError(f"{where}pattern: invalid regular expression: {e}") from None
        rules.append(Rule(pattern, _string(raw, "cache_control", where, None)))
    return Rules(tuple(rules), default)


def _check_keys(table: Mapping[str, Any], known: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ConfigError(f"{where}{key}: unknown key{hint}")


def _string(table: Mapping[str, Any], key: str, where: str, default: str | None) -> str:
    value = table.get(key, default)
    if value is None:
        raise ConfigError(f"{where}{key}: required")
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}{key}: must be a non-empty string")
    if "\r" in value or "\n" in value:
        raise ConfigError(f"{where}{key}: must be a single line")
    return value
