"""The release pipeline's offline steps: `edgecdn version --exclude`, then `edgecdn-origin publish` of a
directory or of the version manifest, keeping nested paths."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import xxhash

from edgecdn import cli
from origin import cli as origin_cli

SITE = {
    "index.html": b"<script src=/js/app.js></script>",
    "admin/index.html": b"<h1>admin</h1>",
    "js/app.js": b"console.log('v1')",
    "js/vendor/lib.js": b"var lib = 1;",
    "css/site.css": b"body{}",
}


def tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return root


def versioned(rel: str) -> str:
    stem, _, ext = rel.rpartition(".")
    return f"{stem}.{xxhash.xxh3_64_hexdigest(SITE[rel])}.{ext}"


def files_under(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def dist(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> Path:
    src = tree(tmp_path / "site", SITE)
    out = tmp_path / "dist"
    assert cli.main(["version", str(src), "--out", str(out), "--exclude", "index.html", "--quiet"]) == 0
    return out


def test_version_exclude_keeps_entry_points_under_their_names_out_of_the_manifests(dist: Path) -> None:
    assert files_under(dist) == {
        "index.html",
        "admin/index.html",
        *(versioned(r) for r in ("js/app.js", "js/vendor/lib.js", "css/site.css")),
        "manifest.json",
        "manifest.txt",
    }
    manifest = json.loads((dist / "manifest.json").read_text())
    assert set(manifest["files"]) == {"js/app.js", "js/vendor/lib.js", "css/site.css"}
    assert "index.html" not in (dist / "manifest.txt").read_text()


def test_a_changed_entry_point_of_the_same_size_is_replaced(tmp_path: Path, dist: Path) -> None:
    (tmp_path / "site" / "index.html").write_bytes(SITE["index.html"].replace(b"app", b"APP"))
    before = (dist / "js" / Path(versioned("js/app.js")).name).stat().st_mtime_ns
    assert (
        cli.main(
            ["version", str(tmp_path / "site"), "--out", str(dist), "--exclude", "index.html", "--quiet"]
        )
        == 0
    )
    assert b"APP" in (dist / "index.html").read_bytes()
    assert (dist / "js" / Path(versioned("js/app.js")).name).stat().st_mtime_ns == before


def test_exclude_globs_with_a_slash_match_the_whole_path(tmp_path: Path) -> None:
    src = tree(tmp_path / "site", SITE)
    out = tmp_path / "dist"
    assert cli.main(["version", str(src), "--out", str(out), "--exclude", "admin/*.html", "--quiet"]) == 0
    assert "admin/index.html" in files_under(out) and "index.html" not in files_under(out)


def test_publish_the_manifest_places_only_the_versioned_files_at_their_nested_paths(
    tmp_path: Path, dist: Path
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    assert origin_cli.main(["publish", str(dist / "manifest.json"), "--root", str(root)]) == 0
    assert files_under(root) == {versioned(r) for r in ("js/app.js", "js/vendor/lib.js", "css/site.css")}
    assert origin_cli.main(["publish", str(dist / "index.html"), "--root", str(root)]) == 0
    assert (root / "index.html").read_bytes() == SITE["index.html"]


def test_publish_a_directory_keeps_nested_paths_and_takes_a_prefix(tmp_path: Path) -> None:
    src = tree(tmp_path / "site", SITE)
    (src / ".hidden").write_text("not published")
    root = tmp_path / "www"
    root.mkdir()
    assert origin_cli.main(["publish", str(src), "--root", str(root)]) == 0
    assert files_under(root) == set(SITE)
    assert origin_cli.main(["publish", f"{src / 'js'}=/static", "--root", str(root)]) == 0
    assert (root / "static" / "vendor" / "lib.js").read_bytes() == SITE["js/vendor/lib.js"]


def test_other_json_files_are_published_as_files(tmp_path: Path) -> None:
    app_manifest = tmp_path / "manifest.json"
    app_manifest.write_text('{"name": "my app", "version": 1, "files": ["not", "ours"]}')
    root = tmp_path / "www"
    root.mkdir()
    assert origin_cli.main(["publish", str(app_manifest), "--root", str(root)]) == 0
    assert files_under(root) == {"manifest.json"}


def test_publish_refuses_a_manifest_listing_a_missing_file_and_an_empty_directory(
    tmp_path: Path, dist: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "www"
    root.mkdir()
    (dist / versioned("css/site.css")).unlink()
    (tmp_path / "empty").mkdir()
    for args, message in [
        ((str(dist / "manifest.json"),), "is not a file"),
        ((str(tmp_path / "empty"),), "nothing to publish"),
    ]:
        assert origin_cli.main(["publish", *args, "--root", str(root)]) == 2
        err = capsys.readouterr().err
        assert message in err and len(err.strip().splitlines()) == 1, err
    assert files_under(root) == set()
