"""The origin list and the [origin] failover keys: strings or tables, strict, bounded."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecdn.config import Config, OriginServer, load_config
from edgecdn.errors import ConfigError


def load(tmp_path: Path, text: str) -> Config:
    path = tmp_path / "edge.toml"
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def test_strings_and_tables_mix_in_order(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        'origins = ["http://a:1", {url = "http://b:2/", weight = 5, max_conns = 10}, '
        '{url = "http://c:3", backup = true}]\n',
    )
    assert cfg.origins == (
        OriginServer("http://a:1"),
        OriginServer("http://b:2", weight=5, max_conns=10),
        OriginServer("http://c:3", backup=True),
    )


def test_failover_keys_land_in_origin_config(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        'origins = ["http://a:1"]\n[origin]\npolicy = "uri_hash"\nmax_fails = 1\nfail_window = "2s"\n'
        'down_time = "500ms"\nhealth_path = "/ping"\nhealth_interval = "1s"\nrise = 3\nfall = 1\n'
        'health_status = 204\nretry_statuses = [502, 429]\ntries = 2\nretry_deadline = "5s"\n'
        'cdn_id = "shield-1"\n',
    )
    o = cfg.origin
    assert (o.policy, o.max_fails, o.fail_window, o.down_time) == ("uri_hash", 1, 2.0, 0.5)
    assert (o.health_path, o.health_interval, o.rise, o.fall, o.health_status) == ("/ping", 1.0, 3, 1, 204)
    assert (o.retry_statuses, o.tries, o.retry_deadline, o.cdn_id) == ((502, 429), 2, 5.0, "shield-1")


def test_defaults_are_failover_with_passive_checks_and_502_503_504() -> None:
    o = Config().origin
    assert (o.policy, o.max_fails, o.health_path, o.retry_statuses) == ("failover", 3, "", (502, 503, 504))


BAD = [
    (
        "table-typo",
        'origins = [{url = "http://a", wieght = 2}]\n',
        "origins[0].wieght: unknown key; did you mean weight?",
    ),
    ("table-bad-url", 'origins = [{url = "ftp://a"}]\n', "origins[0].url: expected an origin"),
    ("weight-zero", 'origins = [{url = "http://a", weight = 0}]\n', "origins[0].weight: must be >= 1"),
    ("duplicate", 'origins = ["http://a", "http://a/"]\n', "origins: an origin is listed twice"),
    ("policy", '[origin]\npolicy = "random"\n', "origin.policy: must be one of failover"),
    ("origin-typo", "[origin]\nmax_fail = 2\n", "origin.max_fail: unknown key; did you mean max_fails?"),
    ("status", "[origin]\nretry_statuses = [99]\n", "origin.retry_statuses[0]: expected an HTTP status"),
    ("cdn-id", '[origin]\ncdn_id = "a b"\n', "origin.cdn_id: expected a token"),
    ("health-path", '[origin]\nhealth_path = "ping"\n', "origin.health_path: must start with /"),
]


@pytest.mark.parametrize(("text", "message"), [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_origin_config_names_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match="^" + message.replace("[", r"\[").replace("]", r"\]")):
        load(tmp_path, text)


def test_url_signing_keys_are_checked_in_full_at_load(tmp_path: Path) -> None:
    from edgecdn.cli import check_admin_keys

    cfg = load(tmp_path, f'[access]\nkeys = ["k:{"B" * 43}"]\n')  # the right shape, not canonical base64
    with pytest.raises(ConfigError, match=r"^access\.keys: "):
        check_admin_keys(cfg)


def test_signed_paths_need_keys(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"^access.paths\[0\]: signed URLs need access.keys"):
        load(tmp_path, '[[access.paths]]\nprefix = "/p/"\n')


def test_forward_headers_and_error_ttl(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        'origins = ["http://a:1"]\n[origin]\nforward_headers = ["X-Site", "X-Test-*"]\n'
        '[cache]\nerror_ttl = "2s"\n',
    )
    assert cfg.origin.forward_headers == ("X-Site", "X-Test-*")
    assert cfg.cache.error_ttl == 2.0


@pytest.mark.parametrize("bad", ['["X Site"]', '["a*b"]', '["*"]', '[""]', "[1]"])
def test_forward_headers_must_be_field_names(tmp_path: Path, bad: str) -> None:
    with pytest.raises(ConfigError, match="forward_headers"):
        load(tmp_path, f'origins = ["http://a:1"]\n[origin]\nforward_headers = {bad}\n')


def test_forward_header_flag_adds_to_the_file(tmp_path: Path) -> None:
    from edgecdn import cli

    path = tmp_path / "edge.toml"
    path.write_text('origins = ["http://a:1"]\n[origin]\nforward_headers = ["X-Site"]\n')
    args = cli.build_parser().parse_args(["serve", "-c", str(path), "--forward-header", "X-Test-*"])
    assert cli.config_from_args(args).origin.forward_headers == ("X-Site", "X-Test-*")
    bad = cli.build_parser().parse_args(["serve", "-c", str(path), "--forward-header", "X Y"])
    with pytest.raises(ConfigError, match="--forward-header"):
        cli.config_from_args(bad)
