"""`edgecdn version`: a real tree in, versioned files and manifests out; reruns change nothing."""

import argparse
import json
import os
import shutil
from pathlib import Path

import pytest
import xxhash

from edgecdn.control import versioning
from edgecdn.control.versioning import VersionResult, add_arguments, run, version_tree
from edgecdn.errors import UsageError

SOURCES = {
    "css/site.css": b"body { color: red }\n",
    "js/a.min.js": b"console.log(1)",
    "LICENSE": b"Apache-2.0\n",
    "img/logo.png": bytes(range(256)) * 9,
    "docs/read me.txt": b"spaces are quoted in manifest.txt\n",
    "empty.txt": b"",
}


def h(data: bytes) -> str:
    return xxhash.xxh3_64_hexdigest(data)


def make_tree(root: Path, files: dict[str, bytes] = SOURCES) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def snapshot(root: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under root with its bytes and mtime, to prove a rerun touched nothing."""
    return {
        p.relative_to(root).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="edgecdn version")
    add_arguments(parser)
    return parser.parse_args(argv)


@pytest.fixture
def src(tmp_path: Path) -> Path:
    return make_tree(tmp_path / "src")


def test_outputs_and_manifests(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    result = version_tree(src, out, "https://cdn.example.com/")

    expected = {rel: versioning.versioned_name(rel, h(data)) for rel, data in sorted(SOURCES.items())}
    assert expected["css/site.css"] == f"css/site.{h(SOURCES['css/site.css'])}.css"
    assert expected["js/a.min.js"] == f"js/a.min.{h(SOURCES['js/a.min.js'])}.js"
    for rel, vpath in expected.items():
        assert (out / vpath).read_bytes() == SOURCES[rel]
    assert sorted(snapshot(out)) == sorted([*expected.values(), "manifest.json", "manifest.txt"])
    assert result.copied == len(SOURCES)
    assert result.unchanged == 0
    assert result.total_bytes == sum(len(d) for d in SOURCES.values())
    assert result.manifests_written == ("manifest.json", "manifest.txt")

    raw = (out / "manifest.json").read_text()
    assert raw.endswith("}\n")
    manifest = json.loads(raw)
    assert manifest == {
        "version": 1,
        "files": {
            rel: {"path": expected[rel], "size": len(data), "hash": h(data)} for rel, data in SOURCES.items()
        },
    }
    assert raw == json.dumps(manifest, sort_keys=True, indent=2) + "\n"

    lines = (out / "manifest.txt").read_text().splitlines()
    assert lines[0] == "# edgecdn prefetch manifest"
    assert lines[1:] == sorted(lines[1:])
    assert f"https://cdn.example.com/{expected['css/site.css']}" in lines
    read_me = expected["docs/read me.txt"].replace(" ", "%20")
    assert f"https://cdn.example.com/{read_me}" in lines
    assert len(lines) == 1 + len(SOURCES)


def test_manifest_txt_without_base_url_uses_absolute_paths(src: Path, tmp_path: Path) -> None:
    version_tree(src, tmp_path / "dist")
    lines = (tmp_path / "dist" / "manifest.txt").read_text().splitlines()
    assert all(line.startswith("/") for line in lines[1:])
    assert f"/css/site.{h(SOURCES['css/site.css'])}.css" in lines


def test_base_url_path_prefix(src: Path, tmp_path: Path) -> None:
    version_tree(src, tmp_path / "dist", "/static/")
    lines = (tmp_path / "dist" / "manifest.txt").read_text().splitlines()
    assert f"/static/LICENSE.{h(SOURCES['LICENSE'])}" in lines


def test_second_run_changes_nothing(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    version_tree(src, out, "https://cdn.example.com")
    before = snapshot(out)
    result = version_tree(src, out, "https://cdn.example.com")
    assert snapshot(out) == before
    assert result.copied == 0
    assert result.unchanged == len(SOURCES)
    assert result.manifests_written == ()


def test_changed_file_adds_a_version_and_keeps_the_old_one(src: Path, tmp_path: Path) -> None:
    out = tmp_path / "dist"
    version_tree(src, out)
    old = out / f"css/site.{h(SOURCES['css/site.css'])}.css"
    blue = b"body { color: blue }\n"
    (src / "css/site.css").write_bytes(blue)
    result = version_tree(src, out)
    assert result.copied == 1
    assert old.is_file()
    assert (out / f"css/site.{h(blue)}.css").read_bytes() == blue
    files = json.loads((out / "manifest.json").read_text())["files"]
    assert files["css/site.css"]["hash"] == h(blue)


def test_symlinks_and_special_files(src: Path, tmp_path: Path) -> None:
    outside = tmp_path / "secret.txt"
    outside.write_bytes(b"not for the cdn")
    (src / "leak.txt").symlink_to(outside)
    (src / "alias.css").symlink_to(src / "css/site.css")
    (src / "linked-dir").symlink_to(src / "css", target_is_directory=True)
    (src / "dangling").symlink_to(src / "missing")
    os.mkfifo(src / "pipe")

    result = version_tree(src, tmp_path / "dist")

    logical = {f.logical for f in result.files}
    assert "alias.css" in logical
    assert not logical & {"leak.txt", "dangling", "pipe"}
    assert not any(f.startswith("linked-dir/") for f in logical)
    assert set(result.skipped) == {"leak.txt", "linked-dir", "dangling", "pipe"}
    assert b"not for the cdn" not in b"".join(d for d, _ in snapshot(tmp_path / "dist").values())


@pytest.mark.parametrize(
    "out_rel",
    [
        pytest.param("src", id="out-equals-src"),
        pytest.param("src/dist", id="out-inside-src"),
        pytest.param("src/css/../dist", id="out-inside-src-via-dotdot"),
        pytest.param(".", id="src-inside-out"),
    ],
)
def test_overlapping_trees_are_refused(src: Path, tmp_path: Path, out_rel: str) -> None:
    before = snapshot(tmp_path)
    with pytest.raises(UsageError, match="--out"):
        version_tree(src, tmp_path / out_rel)
    assert snapshot(tmp_path) == before


def test_empty_src_writes_empty_manifests(tmp_path: Path) -> None:
    (tmp_path / "src").mkdir()
    result = version_tree(tmp_path / "src", tmp_path / "dist")
    assert result.files == ()
    assert json.loads((tmp_path / "dist/manifest.json").read_text()) == {"version": 1, "files": {}}
    assert (tmp_path / "dist/manifest.txt").read_text() == "# edgecdn prefetch manifest\n"


def test_unreadable_directory_fails_the_run(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_scandir = os.scandir

    def scandir(path: str) -> object:  # chmod 0 does not stop root, so refuse here instead
        if Path(path).name == "css":
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(UsageError, match="Permission denied"):
        version_tree(src, tmp_path / "dist")


def test_missing_src_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        version_tree(tmp_path / "nope", tmp_path / "dist")


@pytest.mark.parametrize("base_url", ["cdn.example.com", "ftp://x/", "https://x/?a=1", "/a b"])
def test_bad_base_url_is_refused(src: Path, tmp_path: Path, base_url: str) -> None:
    with pytest.raises(UsageError, match="--base-url"):
        version_tree(src, tmp_path / "dist", base_url)
    assert not (tmp_path / "dist").exists()


def test_a_failed_copy_leaves_no_file_under_a_final_name(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def half_copy(source: Path, target: Path) -> None:
        Path(target).write_bytes(Path(source).read_bytes()[:3])
        raise OSError(28, "No space left on device", str(target))

    monkeypatch.setattr(shutil, "copyfile", half_copy)
    out = tmp_path / "dist"
    with pytest.raises(UsageError, match="No space left"):
        version_tree(src, out)
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_a_source_changed_during_the_copy_is_not_published(
    src: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def racing_copy(source: Path, target: Path) -> None:
        Path(target).write_bytes(b"edited meanwhile")

    monkeypatch.setattr(shutil, "copyfile", racing_copy)
    out = tmp_path / "dist"
    with pytest.raises(UsageError, match="changed while being versioned"):
        version_tree(src, out)
    assert [p for p in out.rglob("*") if p.is_file()] == []


def test_progress_reports_each_file(src: Path, tmp_path: Path) -> None:
    seen: list[tuple[int, int]] = []
    version_tree(src, tmp_path / "dist", progress=lambda done, total: seen.append((done, total)))
    assert seen == [(i, len(SOURCES)) for i in range(1, len(SOURCES) + 1)]


def test_run_prints_a_summary(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "dist"
    args = parse(str(src), "--out", str(out), "--base-url", "https://cdn.example.com")
    assert run(args) == 0
    first = capsys.readouterr().out
    assert f"versioned {len(SOURCES)} files" in first
    assert f"{len(SOURCES)} new, 0 unchanged" in first
    assert "manifest.json" in first
    assert first.count("\n") == 1

    assert run(args) == 0
    second = capsys.readouterr().out
    assert f"0 new, {len(SOURCES)} unchanged" in second
    assert "manifests: unchanged" in second


def test_run_quiet_prints_nothing(src: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(parse(str(src), "--out", str(tmp_path / "dist"), "--quiet")) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "dist" / "manifest.json").is_file()


def test_run_with_many_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    files = {f"a/{i:03}.txt": str(i).encode() for i in range(150)}
    src = make_tree(tmp_path / "src", files)
    assert run(parse(str(src), "--out", str(tmp_path / "dist"))) == 0
    assert "versioned 150 files" in capsys.readouterr().out


def test_run_errors_are_usage_errors(src: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="no such directory"):
        run(parse(str(tmp_path / "nope"), "--out", str(tmp_path / "dist")))
    with pytest.raises(UsageError, match="inside"):
        run(parse(str(src), "--out", str(src / "dist")))


def test_out_is_required(src: Path) -> None:
    with pytest.raises(SystemExit) as info:
        parse(str(src))
    assert info.value.code == 2


def test_result_type(src: Path, tmp_path: Path) -> None:
    result = version_tree(src, tmp_path / "dist")
    assert isinstance(result, VersionResult)
    assert [f.logical for f in result.files] == sorted(SOURCES)
