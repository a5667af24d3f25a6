"""server.access_log: the old booleans keep working; a destination may be named."""

from __future__ import annotations

import pytest

from edgecdn.config import parse_access_log
from edgecdn.errors import ConfigError


@pytest.mark.parametrize(
    ("value", "want"),
    [
        (True, True),
        (False, False),
        ("off", False),
        ("stdout", "stdout"),
        ("stderr", "stderr"),
        ("/var/log/edgecdn/access.log", "/var/log/edgecdn/access.log"),
        ("./access.log", "./access.log"),
    ],
    ids=["true-is-stdout", "false-is-off", "off", "stdout", "stderr", "absolute-path", "relative-path"],
)
def test_destinations(value: object, want: object) -> None:
    assert parse_access_log(value, "server.access_log") == want


@pytest.mark.parametrize("value", ["yes", "", 1, "a\0/b"], ids=["word", "empty", "number", "nul"])
def test_anything_else_names_the_key(value: object) -> None:
    with pytest.raises(ConfigError, match=r"^server\.access_log: expected true or false"):
        parse_access_log(value, "server.access_log")
