"""`--warm-from MANIFEST`: the URLs a joining edge fetches before it says 200; a bad manifest is one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgecdn.errors import ConfigError
from edgecdn.serve.readiness import MAX_MANIFEST_URLS, read_manifest


def test_text_manifest_urls_comments_and_headers(tmp_path: Path) -> None:
    path = tmp_path / "m.txt"
    path.write_text(
        "# edgecdn prefetch manifest\n\n/a.js\nhttp://edge/b.css  Accept-Encoding: br\n  # x\n/c?q=1\n"
    )
    assert read_manifest(str(path)) == ["/a.js", "http://edge/b.css", "/c?q=1"]


def test_versioning_json_manifest(tmp_path: Path) -> None:
    path = tmp_path / "manifest.json"
    doc = {"version": 1, "files": {"app.js": {"path": "app.0123456789abcdef.js", "size": 1, "hash": "x"}}}
    path.write_text(json.dumps(doc))
    assert read_manifest(str(path)) == ["/app.0123456789abcdef.js"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"\xff\xfe/a\n", "not UTF-8"),
        (b'{"files": 3}', "not an `edgecdn version` JSON manifest"),
        (("/x\n" * (MAX_MANIFEST_URLS + 1)).encode(), "more than"),
    ],
    ids=["not-utf8", "bad-json", "too-many-urls"],
)
def test_bad_manifest_is_a_config_error(tmp_path: Path, content: bytes, message: str) -> None:
    path = tmp_path / "m"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=f"server.warm_from: .*{message}"):
        read_manifest(str(path))


def test_missing_manifest(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"server\.warm_from: .*No such file"):
        read_manifest(str(tmp_path / "none.txt"))
