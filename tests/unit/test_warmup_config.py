"""The [prefetch], [jitter] and [shed] config blocks and ttl_jitter: strict, bounded, named errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecdn.config import JitterRule, load_config
from edgecdn.errors import ConfigError


def load(tmp_path: Path, text: str) -> object:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return load_config(path)


def test_the_blocks_load_with_human_units(tmp_path: Path) -> None:
    cfg = load(
        tmp_path,
        '[prefetch]\nconcurrency = 4\nkeep_results = "10m"\n'
        '[jitter]\nwindow = "30s"\n[[jitter.rules]]\nprefix = "/game/"\nwindow = "10m"\n'
        '[shed]\nmax_fills = 64\nretry_after_min = "2s"\nretry_after_max = "20s"\n'
        '[[cache.rules]]\nprefix = "/"\nttl = "1h"\nttl_jitter = 0.1\n',
    )
    assert cfg.prefetch.concurrency == 4 and cfg.prefetch.keep_results == 600.0  # type: ignore[attr-defined]
    assert cfg.jitter.rules == (JitterRule("/game/", 600.0),)  # type: ignore[attr-defined]
    assert cfg.shed.max_fills == 64 and cfg.shed.retry_after_max == 20.0  # type: ignore[attr-defined]
    assert cfg.cache.rules[0].ttl_jitter == 0.1  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[prefetch]\nconcurency = 4\n", "prefetch.concurency: unknown key; did you mean concurrency?"),
        ("[prefetch]\nconcurrency = 0\n", "prefetch.concurrency: must be >= 1"),
        ('[[jitter.rules]]\nprefix = "game"\nwindow = 1\n', "jitter.rules[0].prefix: must start with /"),
        ('[[jitter.rules]]\nprefix = "/"\nwindw = 1\n', "did you mean window?"),
        ("[shed]\nretry_after_min = 10\nretry_after_max = 2\n", "shed.retry_after_min: must not exceed"),
        ('[[cache.rules]]\nprefix = "/"\nttl_jitter = 0.9\n', "ttl_jitter: must be <= 0.5"),
    ],
    ids=["typo", "zero-concurrency", "relative-prefix", "rule-typo", "retry-range", "ttl-jitter-bound"],
)
def test_bad_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError) as e:
        load(tmp_path, text)
    assert message in str(e.value)
