"""`--warm-from MANIFEST`: the URLs a joining edge fetches before it says 200; a bad manifest is one line."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecdn.control.prefetch import PrefetchItem
from edgecdn.errors import ConfigError
from edgecdn.serve.readiness import MAX_MANIFEST_URLS, warm_items


def test_the_prefetch_manifest_format_headers_included(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text("# edgecdn prefetch manifest\n\n/a.js\n/b.css  Accept-Encoding: br\n  # x\n/c?q=1\n")
    items = warm_items(str(path))
    assert [i.url for i in items] == ["/a.js", "/b.css", "/c?q=1"]
    assert items[1] == PrefetchItem("/b.css", (("Accept-Encoding", "br"),))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe/a\n", "not UTF-8"),
        (b'{"files": 3}', "expected the manifest.json of `edgecdn version`"),
        (("/x\n" * (MAX_MANIFEST_URLS + 1)).encode(), "more than"),
    ],
    ids=["not-utf8", "bad-json", "too-many-urls"],
)
def test_bad_manifest_is_a_config_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"server.warm_from: .*{message}"):
        warm_items(str(path))


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.warm_from: .*no such file"):
        warm_items(str(tmp_path / "none.txt"))
