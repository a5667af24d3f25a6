"""Versioned names: the `name.<xxh3-64 hex>.ext` rule, parsing it back, and the hash itself."""

from pathlib import Path

import pytest
import xxhash

from edgecdn.control.versioning import (
    CHUNK_BYTES,
    VersionPattern,
    hash_file,
    parse_versioned,
    versioned_name,
)
from edgecdn.errors import ConfigError

H = "0123456789abcdef"


@pytest.mark.parametrize(
    ("logical", "versioned"),
    [
        pytest.param("site.css", f"site.{H}.css", id="top-level"),
        pytest.param("css/site.css", f"css/site.{H}.css", id="nested"),
        pytest.param("a/b/c/app.js", f"a/b/c/app.{H}.js", id="deep"),
        pytest.param("LICENSE", f"LICENSE.{H}", id="no-ext"),
        pytest.param("js/a.min.js", f"js/a.min.{H}.js", id="multi-dot-hash-before-last-ext"),
        pytest.param("pkg.tar.gz", f"pkg.tar.{H}.gz", id="double-ext"),
        pytest.param(".htaccess", f".htaccess.{H}", id="dotfile-has-no-ext"),
        pytest.param("conf/.eslintrc.json", f"conf/.eslintrc.{H}.json", id="dotfile-with-ext"),
        pytest.param("weird.", f"weird..{H}", id="trailing-dot-is-no-ext"),
        pytest.param("v1.2/readme", f"v1.2/readme.{H}", id="dot-in-dir-only"),
    ],
)
def test_versioned_name(logical: str, versioned: str) -> None:
    assert versioned_name(logical, H) == versioned
    assert parse_versioned("/" + versioned) == H


@pytest.mark.parametrize("digest", ["0123456789ABCDEF", "0" * 15, "0" * 17, "g" * 16])
def test_versioned_name_refuses_a_bad_digest(digest: str) -> None:
    with pytest.raises(ValueError):
        versioned_name("a.js", digest)


@pytest.mark.parametrize(
    ("path", "digest"),
    [
        pytest.param(f"/css/site.{H}.css", H, id="accept-with-ext"),
        pytest.param(f"/LICENSE.{H}", H, id="accept-no-ext"),
        pytest.param(f"site.{H}.css", H, id="accept-relative"),
        pytest.param(f"/a.{H}.b.{'f' * 16}.js", "f" * 16, id="accept-last-hash-wins"),
        pytest.param(f"/site.{H.upper()}.css", None, id="reject-uppercase"),
        pytest.param(f"/site.{H[:15]}.css", None, id="reject-15-hex"),
        pytest.param(f"/site.{H}0.css", None, id="reject-17-hex"),
        pytest.param(f"/site-{H}.css", None, id="reject-dash-separator"),
        pytest.param(f"/.{H}.css", None, id="reject-empty-stem"),
        pytest.param(f"/{H}/site.css", None, id="reject-hash-in-directory"),
        pytest.param(f"/site.{H}.css/", None, id="reject-directory"),
        pytest.param(f"/site.{H}.tar.gz", None, id="reject-hash-not-before-last-ext"),
        pytest.param("/site.css", None, id="reject-plain"),
    ],
)
def test_parse_versioned(path: str, digest: str | None) -> None:
    assert parse_versioned(path) == digest


def test_custom_pattern_with_named_hash_group() -> None:
    pattern = VersionPattern(r"^(?P<hash>[0-9a-f]{16})-.+$")
    assert pattern.parse(f"/img/{H}-logo.png") == H
    assert parse_versioned(f"/img/{H}-logo.png", pattern) == H
    assert pattern.parse(f"/img/logo.{H}.png") is None


def test_custom_pattern_must_capture_xxh3_hex() -> None:
    pattern = VersionPattern(r"^v(?P<hash>[0-9]+)-")
    assert pattern.parse("/v12-app.js") is None


@pytest.mark.parametrize(
    "regex", [pytest.param(r"(unclosed", id="bad-regex"), pytest.param(r"x", id="no-hash-group")]
)
def test_bad_pattern_is_a_config_error(regex: str) -> None:
    with pytest.raises(ConfigError):
        VersionPattern(regex)


@pytest.mark.parametrize(
    "size",
    [0, 1, CHUNK_BYTES - 1, CHUNK_BYTES, CHUNK_BYTES + 1, 3 * CHUNK_BYTES + 7],
    ids=["empty", "one", "chunk-1", "chunk", "chunk+1", "several-chunks"],
)
def test_hash_file_is_xxh3_64_of_the_bytes(tmp_path: Path, size: int) -> None:
    data = bytes(i * 7 % 251 for i in range(size))
    path = tmp_path / "blob"
    path.write_bytes(data)
    digest = hash_file(path)
    assert digest == xxhash.xxh3_64_hexdigest(data)
    assert len(digest) == 16
    assert digest == f"{xxhash.xxh3_64_intdigest(data):016x}"


def test_hash_is_zero_padded(tmp_path: Path) -> None:
    bodies = (str(i).encode() for i in range(10_000))
    body = next(b for b in bodies if xxhash.xxh3_64_intdigest(b) < 2**60)  # leading zero nibble
    path = tmp_path / "x.js"
    path.write_bytes(body)
    digest = hash_file(path)
    assert digest.startswith("0")
    assert len(digest) == 16
    assert parse_versioned(versioned_name("x.js", digest)) == digest
