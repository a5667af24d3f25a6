"""Config from strict TOML (STYLE.md rule 6): unknown keys suggest, units parse, every error names its key."""

import dataclasses
import re
import typing
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from edgecdn.config import CacheConfig, Config, TtlRule, load_config
from edgecdn.errors import ConfigError

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"

Writer = Callable[[str], Path]


@pytest.fixture
def write(tmp_path: Path) -> Writer:
    def write(text: str) -> Path:
        path = tmp_path / "edge.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write


def test_empty_file_is_all_defaults(write: Writer) -> None:
    assert load_config(write("")) == Config()


@pytest.mark.parametrize("path", sorted(DEPLOY.glob("edge*.toml")), ids=lambda p: p.name)
def test_deploy_examples_load(path: Path) -> None:
    config = load_config(path)
    assert config.origins


def test_deploy_has_an_edge_example() -> None:
    assert sorted(DEPLOY.glob("edge*.toml"))


def config_keys(cls: type, prefix: str = "") -> Iterator[str]:
    """Every key a config file may hold: `section.key`, and `section.rows.key` for arrays of tables."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind = hints[f.name]
        row = next((a for a in typing.get_args(kind) if dataclasses.is_dataclass(a)), None)
        if dataclasses.is_dataclass(kind):
            yield from config_keys(kind, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        elif row is not None:
            yield from config_keys(row, f"{prefix}{f.name}.")  # type: ignore[arg-type]
        else:
            yield f"{prefix}{f.name}"


def documented_keys(text: str) -> set[str]:
    """The keys an example shows, set or commented out (`# key = ...`), under their [section]."""
    keys, section = set(), ""
    for line in text.splitlines():
        bare = line.strip().lstrip("#").strip()
        if m := re.fullmatch(r"\[\[?([a-z_.]+)\]?\]", bare):
            section = m.group(1) + "."
        elif m := re.match(r"([a-z_]+)\s*=", bare):
            keys.add(section + m.group(1))
            for inline in re.findall(r"\{([^}]*)\}", bare):  # rows written inline: {url = ..., weight = 2}
                keys.update(f"{section}{m.group(1)}.{k}" for k in re.findall(r"([a-z_]+)\s*=", inline))
    return keys


def test_the_edge_example_documents_every_key() -> None:
    """STYLE.md rule 6 / issue 11: deploy/edge.example.toml shows every key the config takes."""
    missing = set(config_keys(Config)) - documented_keys((DEPLOY / "edge.example.toml").read_text())
    assert not missing, f"document these in deploy/edge.example.toml: {sorted(missing)}"


UNKNOWN = [
    (
        "cache-key-typo",
        "[cache]\nmax_objet_size = 5\n",
        "cache.max_objet_size: unknown key; did you mean max_object_size?",
    ),
    ("top-level-typo", 'orgins = ["http://a"]\n', "orgins: unknown key; did you mean origins?"),
    ("section-typo", "[cahce]\n", "cahce: unknown key; did you mean cache?"),
    (
        "server-key-typo",
        "[server]\nlisten_addr = '127.0.0.1:1'\n",
        "server.listen_addr: unknown key; did you mean listen?",
    ),
    (
        "rule-key-typo",
        "[[cache.rules]]\nprefix = '/'\ntll = 5\n",
        "cache.rules[0].tll: unknown key; did you mean ttl?",
    ),
    ("no-suggestion", "[cache]\nzzzz = 1\n", "cache.zzzz: unknown key"),
]


@pytest.mark.parametrize(("text", "message"), [u[1:] for u in UNKNOWN], ids=[u[0] for u in UNKNOWN])
def test_unknown_key_names_it_and_suggests(write: Writer, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(text))
    assert str(info.value) == message


SIZES = [
    ("size-mib", '"1MiB"', 2**20),
    ("size-bytes", "1048576", 2**20),
    ("size-bytes-string", '"512"', 512),
    ("size-decimal-unit-with-space", '"10 GB"', 10 * 10**9),
    ("size-fraction", '"1.5KiB"', 1536),
    ("size-unit-case-insensitive", '"2gib"', 2 * 2**30),
]


@pytest.mark.parametrize(("value", "expected"), [s[1:] for s in SIZES], ids=[s[0] for s in SIZES])
def test_sizes(write: Writer, value: str, expected: int) -> None:
    config = load_config(write(f"[cache]\nmax_object_size = {value}\n"))
    assert config.cache.max_object_size == expected


DURATIONS = [
    ("duration-seconds-suffix", '"30s"', 30.0),
    ("duration-milliseconds", '"500ms"', 0.5),
    ("duration-integer", "5", 5.0),
    ("duration-float", "1.5", 1.5),
    ("duration-minutes", '"5m"', 300.0),
    ("duration-hours", '"2h"', 7200.0),
    ("duration-days", '"1d"', 86400.0),
    ("duration-bare-string", '"7"', 7.0),
]


@pytest.mark.parametrize(("value", "expected"), [d[1:] for d in DURATIONS], ids=[d[0] for d in DURATIONS])
def test_durations(write: Writer, value: str, expected: float) -> None:
    assert load_config(write(f"[cache]\nclock_skew = {value}\n")).cache.clock_skew == expected


def test_values_land_in_frozen_dataclasses(write: Writer) -> None:
    config = load_config(
        write(
            'origins = ["http://127.0.0.1:9000/", "https://b.example"]\n'
            "[server]\naccess_log = false\n"
            '[origin]\nconnect_timeout = "250ms"\n'
            "[cache]\nheuristic_fraction = 0.25\nmax_variants = 4\n"
        )
    )
    assert [o.url for o in config.origins] == ["http://127.0.0.1:9000", "https://b.example"]
    assert config.server.access_log is False
    assert config.origin.connect_timeout == 0.25
    assert (config.cache.heuristic_fraction, config.cache.max_variants) == (0.25, 4)
    with pytest.raises(AttributeError):
        config.cache.max_variants = 5  # type: ignore[misc]


def test_rules(write: Writer) -> None:
    config = load_config(
        write(
            '[[cache.rules]]\nprefix = "/static/"\nttl = "1h"\nstale_while_revalidate = "30s"\n'
            '[[cache.rules]]\nregex = "\\\\.m3u8$"\nttl = 2\nmode = "override"\n'
        )
    )
    assert config.cache.rules == (
        TtlRule(prefix="/static/", ttl=3600.0, stale_while_revalidate=30.0),
        TtlRule(regex=r"\.m3u8$", ttl=2.0, mode="override"),
    )


def test_set_cookie_setting_and_rule_override(write: Writer) -> None:
    config = load_config(
        write('[cache]\nset_cookie = "strip"\n[[cache.rules]]\nprefix = "/shop/"\nset_cookie = "store"\n')
    )
    assert config.cache.set_cookie == "strip"
    assert config.cache.rules == (TtlRule(prefix="/shop/", set_cookie="store"),)
    assert config.cache.rules[0].ttl is None  # a rule without ttl sets no TTL
    assert load_config(write("")).cache.set_cookie == "pass"


# (id, TOML, the start of the message: every error names its key)
ERRORS = [
    (
        "set-cookie-choice",
        '[cache]\nset_cookie = "keep"\n',
        "cache.set_cookie: must be one of pass, strip, store",
    ),
    (
        "rule-set-cookie-choice",
        '[[cache.rules]]\nprefix = "/"\nset_cookie = "yes"\n',
        "cache.rules[0].set_cookie: must be one of pass, strip, store",
    ),
    (
        "override-without-ttl",
        '[[cache.rules]]\nprefix = "/"\nmode = "override"\n',
        'cache.rules[0]: mode = "override" needs a ttl',
    ),
    ("bad-size", '[cache]\nmax_object_size = "lots"\n', "cache.max_object_size: expected a size"),
    ("bad-size-unit", '[cache]\nmax_object_size = "5 parsecs"\n', "cache.max_object_size: expected a size"),
    ("bool-is-not-a-size", "[cache]\nmax_object_size = true\n", "cache.max_object_size: expected a size"),
    ("bad-duration", '[cache]\nclock_skew = "soon"\n', "cache.clock_skew: expected a duration"),
    ("negative-duration-string", '[cache]\nclock_skew = "-5s"\n', "cache.clock_skew: expected a duration"),
    ("bool-is-not-a-duration", "[cache]\nclock_skew = false\n", "cache.clock_skew: expected a duration"),
    ("not-a-bool", '[server]\naccess_log = "yes"\n', "server.access_log: expected true or false"),
    ("not-an-integer", '[cache]\nmax_variants = "16"\n', "cache.max_variants: expected an integer"),
    ("float-is-not-an-integer", "[cache]\nmax_variants = 1.5\n", "cache.max_variants: expected an integer"),
    ("not-a-number", '[cache]\nheuristic_fraction = "x"\n', "cache.heuristic_fraction: expected a number"),
    ("not-a-string", "[cache]\ndir = 5\n", "cache.dir: expected a string"),
    ("section-not-a-table", "server = 5\n", "server"),
    ("rules-not-an-array", '[cache]\nrules = "x"\n', "cache.rules: expected an array of tables"),
    ("zero-max-object-size", "[cache]\nmax_object_size = 0\n", "cache.max_object_size: must be >= 1"),
    ("negative-size", "[cache]\nmemory_size = -1\n", "cache.memory_size: must be >= 0"),
    ("fraction-above-one", "[cache]\nheuristic_fraction = 1.5\n", "cache.heuristic_fraction: must be <= 1.0"),
    (
        "fraction-below-zero",
        "[cache]\nheuristic_fraction = -0.1\n",
        "cache.heuristic_fraction: must be >= 0.0",
    ),
    ("variants-zero", "[cache]\nmax_variants = 0\n", "cache.max_variants: must be >= 1"),
    ("variants-too-many", "[cache]\nmax_variants = 5000\n", "cache.max_variants: must be <= 1024"),
    ("zero-timeout", "[origin]\nconnect_timeout = 0\n", "origin.connect_timeout: must be >= 0.001"),
    ("negative-duration", "[cache]\nclock_skew = -1\n", "cache.clock_skew: must be >= 0"),
    ("negative-rule-ttl", '[[cache.rules]]\nprefix = "/"\nttl = -1\n', "cache.rules[0].ttl: must be >= 0"),
    (
        "rule-mode",
        '[[cache.rules]]\nprefix = "/"\nmode = "always"\n',
        "cache.rules[0].mode: must be one of default, override",
    ),
    (
        "rule-prefix-and-regex",
        '[[cache.rules]]\nprefix = "/"\nregex = "x"\n',
        "cache.rules[0]: set exactly one of prefix or regex",
    ),
    ("rule-neither", "[[cache.rules]]\nttl = 5\n", "cache.rules[0]: set exactly one of prefix or regex"),
    (
        "second-rule-named",
        '[[cache.rules]]\nprefix = "/"\n[[cache.rules]]\nregex = "(["\n',
        "cache.rules[1].regex: ",
    ),
    ("bad-origin", 'origins = ["ftp://a"]\n', "origins[0]: expected an origin"),
    ("origin-with-path", 'origins = ["http://a", "http://b/x"]\n', "origins[1]: expected an origin"),
    ("bad-listen", '[server]\nlisten = "8080"\n', "server.listen: expected HOST:PORT"),
    (
        "bad-admin-port",
        '[server]\nadmin_listen = "127.0.0.1:70000"\n',
        "server.admin_listen: expected HOST:PORT",
    ),
    (
        "memory-object-larger-than-memory",
        '[cache]\nmemory_size = "1MiB"\nmemory_object_max = "2MiB"\n',
        "cache.memory_object_max: must not exceed cache.memory_size",
    ),
]


@pytest.mark.parametrize(("text", "prefix"), [e[1:] for e in ERRORS], ids=[e[0] for e in ERRORS])
def test_errors_name_the_key(write: Writer, text: str, prefix: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(prefix)):
        load_config(write(text))


def test_invalid_toml(write: Writer) -> None:
    path = write("[cache\nmax_object_size = 1\n")
    with pytest.raises(ConfigError, match=re.escape(f"{path}: invalid TOML")):
        load_config(path)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        load_config(tmp_path / "absent.toml")


def test_defaults_are_sane() -> None:
    cache = CacheConfig()
    assert (cache.heuristic_fraction, cache.clock_skew, cache.rules) == (0.1, 60.0, ())
