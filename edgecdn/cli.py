"""The `edgecdn` command. Each subcommand's flags and body live with the concept it drives.

Rules of this file: bad input prints one line and exits 2; nothing prints a traceback to a user.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Callable, Sequence

from edgecdn import config as config_mod
from edgecdn.build_info import __version__
from edgecdn.config import Config, load_config, validate
from edgecdn.control import download, keygen, purge, signing, signurl, stats, versioning, warmup
from edgecdn.errors import ConfigError, EdgeError, UsageError
from edgecdn.serve import tls


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        """argparse's own errors: one line, exit 2 (no usage dump)."""
        self.exit(2, f"{self.prog}: error: {message}\n")


def _serve_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("-c", "--config", metavar="FILE", help="TOML config; flags override it")
    p.add_argument(
        "--origin",
        action="append",
        metavar="URL",
        help="origin base URL, e.g. http://127.0.0.1:9000 (repeatable, in order)",
    )
    p.add_argument("--listen", metavar="HOST:PORT", help="public listener (default 127.0.0.1:8080)")
    p.add_argument(
        "--admin-listen",
        metavar="HOST:PORT",
        help="admin listener: metrics, stats (default 127.0.0.1:8081)",
    )
    p.add_argument(
        "--tls-cert", metavar="FILE", help="PEM certificate chain: --listen speaks TLS (h2, http/1.1)"
    )
    p.add_argument("--tls-key", metavar="FILE", help="PEM private key for --tls-cert (no passphrase)")
    p.add_argument(
        "--redirect-listen", metavar="HOST:PORT", help="with TLS: plain HTTP here answers 308 to https://"
    )
    p.add_argument("--cache-dir", metavar="DIR", help="disk tier directory (default ./.edgecdn-cache)")
    p.add_argument("--memory-size", metavar="SIZE", help='memory tier bound, e.g. "256MiB"')
    p.add_argument("--disk-size", metavar="SIZE", help='disk tier bound, e.g. "10GiB"')
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    p.add_argument(
        "--access-log",
        metavar="DEST",
        help='where access lines go: "stdout" (default), "stderr", "off" or a file path',
    )
    p.add_argument(
        "--workers", metavar="N", help='worker processes behind a master: N or "auto" (server.workers)'
    )
    p.add_argument("--no-uvloop", action="store_true", help="use the default asyncio event loop")
    p.add_argument(
        "--follow-changes",
        metavar="INTERVAL",
        help='poll the origins\' /_origin/changes this often, e.g. "5s" (sync.poll_interval; 0: off)',
    )
    p.add_argument(
        "--warm-from",
        metavar="MANIFEST",
        help="fetch these URLs before /_edge/health says 200 (server.warm_from; bounded by warm_timeout)",
    )
    p.add_argument(
        "--admin-key",
        action="append",
        default=[],
        metavar="KID:SECRET",
        help="key accepted on signed admin calls (repeatable, for rotation; see `edgecdn keygen`)",
    )
    p.add_argument(
        "--forward-header",
        action="append",
        default=[],
        metavar="NAME",
        help='request field cache fills forward to the origin, e.g. "X-Site" or "X-Test-*" (repeatable)',
    )


def config_from_args(args: argparse.Namespace) -> Config:
    """The config file (if any) with command-line flags applied on top, validated."""
    cfg = load_config(args.config) if args.config else Config()
    server, cache = cfg.server, cfg.cache
    if args.origin:
        cfg = dataclasses.replace(
            cfg, origins=tuple(config_mod.parse_origin(o, "--origin") for o in args.origin)
        )
    if args.listen:
        server = dataclasses.replace(server, listen=args.listen)
    if args.admin_listen:
        server = dataclasses.replace(server, admin_listen=args.admin_listen)
    if args.tls_cert or args.tls_key:
        server = dataclasses.replace(server, tls_cert=args.tls_cert or "", tls_key=args.tls_key or "")
    if args.redirect_listen:
        server = dataclasses.replace(server, redirect_listen=args.redirect_listen)
    if args.access_log:
        dest = config_mod.parse_access_log(args.access_log, "--access-log")
        server = dataclasses.replace(server, access_log=dest)
    if args.no_access_log:
        server = dataclasses.replace(server, access_log=False)
    if args.workers is not None:
        server = dataclasses.replace(server, workers=config_mod.parse_workers(args.workers, "--workers"))
    if args.no_uvloop:
        server = dataclasses.replace(server, uvloop=False)
    if args.warm_from:
        server = dataclasses.replace(server, warm_from=args.warm_from)
    if args.cache_dir:
        cache = dataclasses.replace(cache, dir=args.cache_dir)
    if args.memory_size:
        cache = dataclasses.replace(
            cache, memory_size=config_mod.parse_size(args.memory_size, "--memory-size")
        )
    if args.disk_size:
        cache = dataclasses.replace(cache, disk_size=config_mod.parse_size(args.disk_size, "--disk-size"))
    admin = cfg.admin
    if args.admin_key:
        keys = tuple(config_mod.parse_admin_key(k, "--admin-key") for k in args.admin_key)
        admin = dataclasses.replace(admin, keys=admin.keys + keys)
    if args.follow_changes is not None:
        interval = config_mod.parse_duration(args.follow_changes, "--follow-changes")
        cfg = dataclasses.replace(cfg, sync=dataclasses.replace(cfg.sync, poll_interval=interval))
    if args.forward_header:
        names = tuple(config_mod.parse_field_pattern(n, "--forward-header") for n in args.forward_header)
        origin = dataclasses.replace(cfg.origin, forward_headers=cfg.origin.forward_headers + names)
        cfg = dataclasses.replace(cfg, origin=origin)
    cfg = dataclasses.replace(cfg, server=server, cache=cache, admin=admin)
    check_servable(cfg)
    return cfg


def check_servable(cfg: Config) -> None:
    """The one validation `serve` and `check-config` share: what one refuses, the other refuses alike."""
    validate(cfg)
    check_admin_keys(cfg)
    if cfg.server.tls_cert:
        tls.server_context(cfg.server.tls_cert, cfg.server.tls_key)  # loadable, or one line and exit 2
    if not cfg.origins:
        raise ConfigError("origins: at least one origin is required (--origin URL or origins = [...])")


def check_admin_keys(cfg: Config) -> None:
    """The full key check (canonical base64, distinct ids) that config.py, a leaf, cannot import."""
    try:
        signing.parse_keys(cfg.admin.keys)
    except UsageError as e:
        raise ConfigError(f"admin.keys: {e}") from None
    try:
        signing.parse_keys(cfg.access.keys)
    except UsageError as e:
        raise ConfigError(f"access.keys: {e}") from None


def _serve(args: argparse.Namespace) -> int:
    from edgecdn.process import master, runner

    cfg = config_from_args(args)
    run = master.run if cfg.server.workers > 1 else runner.run
    return run(cfg, lambda: config_from_args(args))  # SIGHUP re-reads the file, flags on top


def _check_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("file", metavar="FILE", help="TOML config to validate")


def _check_config(args: argparse.Namespace) -> int:
    cfg = load_config(args.file)
    check_servable(cfg)
    print(f"{args.file}: ok ({len(cfg.origins)} origin(s), {len(cfg.cache.rules)} cache rule(s))")
    return 0


def _fleet_arguments(p: argparse.ArgumentParser) -> None:
    from edgecdn.control import fleet
    from edgecdn.process import fleet as fleet_up

    sub = p.add_subparsers(dest="fleet_command", required=True, parser_class=_Parser)
    for name, help_text, add_arguments, run in (
        (
            "render",
            "render HAProxy, keepalived, nginx and edge configs",
            fleet.add_render_arguments,
            fleet.run_render,
        ),
        ("up", "run the whole fleet on this machine until Ctrl-C", fleet_up.add_arguments, fleet_up.run),
    ):
        sp = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(sp)
        sp.set_defaults(fleet_run=run)


def _fleet(args: argparse.Namespace) -> int:
    code: int = args.fleet_run(args)
    return code


Command = tuple[str, str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]
COMMANDS: Sequence[Command] = (
    ("serve", "run an edge", _serve_arguments, _serve),
    ("check-config", "validate a config file", _check_config_arguments, _check_config),
    (
        "version",
        "rename assets to content-hash names and write manifests",
        versioning.add_arguments,
        versioning.run,
    ),
    ("keygen", "print a new admin key KID:SECRET", keygen.add_arguments, keygen.run),
    ("sign-url", "print a signed client URL (access.paths signed rules)", signurl.add_arguments, signurl.run),
    ("purge", "purge URLs, prefixes or tags on many edges at once", purge.add_arguments, purge.run),
    ("stats", "show /_edge/stats of many edges as one table", stats.add_arguments, stats.run),
    # Warm-up and jitter (issue 9).
    ("prefetch", "warm edges from a manifest, in staggered waves", warmup.add_arguments, warmup.run),
    (
        "download",
        "download after the edge's jitter delay; resume, verify",
        download.add_arguments,
        download.run,
    ),
    ("fleet", "render or run a fleet of edges behind HAProxy and a VIP pair", _fleet_arguments, _fleet),
)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgecdn", description="A CDN edge cache server.")
    parser.add_argument("--version", action="version", version=f"edgecdn {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for name, help_text, add_arguments, run in COMMANDS:
        p = sub.add_parser(name, help=help_text, description=help_text)
        add_arguments(p)
        p.set_defaults(run=run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
        return code
    except (ConfigError, UsageError) as e:
        print(f"edgecdn: error: {e}", file=sys.stderr)
        return 2
    except EdgeError as e:
        print(f"edgecdn: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
