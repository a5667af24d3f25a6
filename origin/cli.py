"""``edgecdn-origin``: the reference origin's command line.

Rules of this file: bad input is one line on stderr and exit code 2, never a traceback; the
readiness line on stdout carries the real port, so ``--listen 127.0.0.1:0`` works.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import NoReturn

from aiohttp import web

from edgecdn.build_info import __version__
from edgecdn.control import sdnotify
from edgecdn.errors import UsageError
from origin import publish
from origin.rules import ConfigError, Rules, load_rules
from origin.server import make_app

PROG = "edgecdn-origin"
DEFAULT_LISTEN = "127.0.0.1:9000"
SHUTDOWN_TIMEOUT_S = 3.0


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def listen_address(value: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[v6]:PORT`` for IPv6) with PORT in 0..65535."""
    host, sep, port = value.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    if not sep or not host or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {value!r}")
    return host, int(port)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description="Reference origin for edgecdn.")
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    serve = commands.add_parser("serve", help="serve a directory over HTTP")
    serve.add_argument("root", metavar="ROOT", type=Path, help="directory to serve")
    serve.add_argument(
        "--listen",
        metavar="HOST:PORT",
        type=listen_address,
        default=listen_address(DEFAULT_LISTEN),
        help=f"address to listen on; port 0 picks a free port (default {DEFAULT_LISTEN})",
    )
    serve.add_argument("--config", metavar="FILE", type=Path, help="TOML file with [[rules]]")
    serve.add_argument(
        "--test-hooks",
        action="store_true",
        help="enable the /_test/ endpoints and X-Test-* headers",
    )
    serve.add_argument(
        "--changes",
        metavar="FILE",
        type=Path,
        help="change log served at /_origin/changes (default: ROOT.changes.jsonl)",
    )
    publish_parser = commands.add_parser(
        "publish", help="place files under ROOT atomically, log the change, purge or push on edges"
    )
    publish.add_arguments(publish_parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else 2
    if args.command == "publish":
        try:
            return publish.run(args)
        except UsageError as e:
            print(f"{PROG} publish: error: {e}", file=sys.stderr)
            return 2
        except OSError as e:
            print(f"{PROG} publish: error: {e}", file=sys.stderr)
            return 1
    root: Path = args.root
    if not root.is_dir():
        return _usage(f"ROOT {str(root)!r}: not a directory")
    try:
        rules = load_rules(args.config) if args.config else Rules()
    except ConfigError as e:
        return _usage(f"--config {e}")
    host, port = args.listen
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    try:
        app = make_app(root, rules, test_hooks=args.test_hooks, changes_log=args.changes)
        asyncio.run(_serve(app, host, port))
    except OSError as e:
        print(f"{PROG}: error: cannot listen on {host}:{port}: {e.strerror or e}", file=sys.stderr)
        return 1
    return 0


def _usage(message: str) -> int:
    print(f"{PROG} serve: error: {message}", file=sys.stderr)
    return 2


async def _serve(app: web.Application, host: str, port: int) -> None:
    runner = web.AppRunner(app, handle_signals=False, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound_host, bound_port = runner.addresses[0][:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        stop = asyncio.Event()  # handlers before readiness: a SIGTERM right after it still stops cleanly
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        print(f"{PROG} listening on http://{shown}:{bound_port}", flush=True)
        sdnotify.notify("READY=1")
        await stop.wait()
        sdnotify.notify("STOPPING=1")
    finally:
        await runner.cleanup()
