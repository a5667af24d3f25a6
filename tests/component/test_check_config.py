"""`edgecdn check-config` and `edgecdn serve` share one validation: what one rejects, the other rejects the
same way (one line, exit 2), and check-config never says "ok" for a config serve would refuse."""

from __future__ import annotations

from pathlib import Path

import pytest

from edgecdn import cli

ORIGIN = 'origins = ["http://127.0.0.1:9"]\n'
BAD = [
    ("empty-file", "", "origins: at least one origin is required"),
    ("no-origins", "[cache]\nmax_variants = 8\n", "origins: at least one origin is required"),
    (
        "same-address-for-both-listeners",
        ORIGIN + '[server]\nlisten = "127.0.0.1:8080"\nadmin_listen = "127.0.0.1:8080"\n',
        "server.admin_listen: must differ from server.listen",
    ),
    (
        "same-address-spelled-differently",
        ORIGIN + '[server]\nlisten = "[::1]:8080"\nadmin_listen = "::1:8080"\n',
        "server.admin_listen: must differ from server.listen",
    ),
    ("bad-admin-key", ORIGIN + '[admin]\nkeys = ["k:' + "A" * 42 + 'B"]\n', "admin.keys"),
]


@pytest.mark.parametrize(("text", "message"), [c[1:] for c in BAD], ids=[c[0] for c in BAD])
def test_check_config_and_serve_reject_the_same_configs_alike(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], text: str, message: str
) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(text, encoding="utf-8")
    errors = []
    for argv in (["check-config", str(path)], ["serve", "-c", str(path), "--cache-dir", str(tmp_path)]):
        assert cli.main(argv) == 2, argv
        out = capsys.readouterr()
        assert len(out.err.strip().splitlines()) == 1 and "ok" not in out.out, out
        errors.append(out.err)
    assert errors[0] == errors[1]
    assert message in errors[0]


def test_ephemeral_ports_on_both_listeners_are_not_the_same_address(tmp_path: Path) -> None:
    path = tmp_path / "edge.toml"
    path.write_text(ORIGIN + '[server]\nlisten = "127.0.0.1:0"\nadmin_listen = "127.0.0.1:0"\n')
    assert cli.main(["check-config", str(path)]) == 0
