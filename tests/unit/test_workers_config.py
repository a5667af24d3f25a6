"""`server.workers` and `--workers`: N or "auto", bounded, one-line errors naming the key."""

import os
from pathlib import Path

import pytest

from edgecdn import cli
from edgecdn.config import MAX_WORKERS, load_config
from edgecdn.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "expected"), [("1", 1), ("4", 4), ('"3"', 3), ('"auto"', max(1, os.cpu_count() or 1))]
)
def test_workers_take_a_count_or_auto(tmp_path: Path, value: str, expected: int) -> None:
    (tmp_path / "e.toml").write_text(f"[server]\nworkers = {value}\n")
    assert load_config(tmp_path / "e.toml").server.workers == expected


@pytest.mark.parametrize("value", ["0", "-1", str(MAX_WORKERS + 1), '"many"', "true", "1.5"])
def test_bad_workers_name_the_key(tmp_path: Path, value: str) -> None:
    (tmp_path / "e.toml").write_text(f"[server]\nworkers = {value}\n")
    with pytest.raises(ConfigError, match=r"^server\.workers: expected 1\.\.256 or \"auto\""):
        load_config(tmp_path / "e.toml")


def test_the_flag_overrides_the_file_and_a_bad_one_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = cli.build_parser().parse_args(["serve", "--origin", "http://127.0.0.1:9", "--workers", "auto"])
    assert cli.config_from_args(args).server.workers == max(1, os.cpu_count() or 1)
    assert cli.main(["serve", "--origin", "http://127.0.0.1:9", "--workers", "0"]) == 2
    assert capsys.readouterr().err == 'edgecdn: error: --workers: expected 1..256 or "auto", got 0\n'
