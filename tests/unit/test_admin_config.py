"""The [admin] config section and --admin-key: strict, secret-safe validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecdn import cli
from edgecdn.config import AdminConfig, load_config
from edgecdn.control.admin_client import KEY_ENV, edge_url, key_from
from edgecdn.control.signing import generate_key
from edgecdn.errors import ConfigError, UsageError

KEY_A = generate_key("a")
KEY_B = generate_key("b")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "edge.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_admin_section_loads_keys_and_limits(tmp_path: Path) -> None:
    cfg = load_config(
        write(
            tmp_path, f'[admin]\nkeys = ["{KEY_A}", "{KEY_B}"]\nmax_body = "64KiB"\nsignature_window = "2m"\n'
        )
    )
    assert cfg.admin == AdminConfig(keys=(KEY_A, KEY_B), max_body=65536, signature_window=120.0)
    assert KEY_A.partition(":")[2] not in repr(cfg)  # secrets stay out of reprs and logs


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[admin]\nkeys = ["nocolon"]\n', "admin.keys[0]: expected KID:SECRET"),
        ('[admin]\nkeys = ["a:short"]\n', "admin.keys[0]: expected KID:SECRET"),
        (f'[admin]\nkeys = ["{KEY_A}", "{generate_key("a")}"]\n', "admin.keys: a key id is given twice"),
        ("[admin]\nkey = []\n", "admin.key: unknown key; did you mean keys?"),
        ("[admin]\nmax_body = 0\n", "admin.max_body: must be >= 1"),
        ("[admin]\nsignature_window = 99999\n", "admin.signature_window: must be <= 3600"),
        ('[cache]\nversioned_pattern = "(unclosed"\n', "cache.versioned_pattern:"),
        ('[cache]\nversioned_pattern = "[0-9a-f]{16}"\n', "needs a named group"),
    ],
)
def test_bad_admin_config_names_the_key_and_never_the_secret(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        load_config(write(tmp_path, text))
    assert KEY_A.partition(":")[2] not in str(e.value)


def test_serve_flag_keys_join_the_config_keys(tmp_path: Path) -> None:
    path = write(tmp_path, f'origins = ["http://127.0.0.1:9"]\n[admin]\nkeys = ["{KEY_A}"]\n')
    args = cli.build_parser().parse_args(["serve", "-c", str(path), "--admin-key", KEY_B])
    assert cli.config_from_args(args).admin.keys == (KEY_A, KEY_B)
    dup = cli.build_parser().parse_args(["serve", "-c", str(path), "--admin-key", generate_key("a")])
    with pytest.raises(ConfigError, match="given twice"):
        cli.config_from_args(dup)


def test_client_key_comes_from_the_flag_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, KEY_B)
    assert key_from(KEY_A).kid == "a"
    assert key_from(None).kid == "b"
    monkeypatch.delenv(KEY_ENV)
    with pytest.raises(UsageError, match=KEY_ENV):
        key_from(None)
    with pytest.raises(UsageError, match="expected an admin URL"):
        edge_url("127.0.0.1:8081")
    assert edge_url("http://127.0.0.1:8081/") == "http://127.0.0.1:8081"
