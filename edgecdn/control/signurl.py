"""`edgecdn sign-url`: print a signed client URL for paths under an `[[access.paths]]` signed rule."""

import argparse

from edgecdn import clock
from edgecdn.config import parse_duration
from edgecdn.control.signing import parse_key
from edgecdn.control.urlsign import sign_url
from edgecdn.errors import ConfigError, UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `edgecdn sign-url`."""
    parser.add_argument("target", metavar="PATH", help="path and optional query, e.g. /video/a.mp4?q=1")
    parser.add_argument("--key", required=True, metavar="KID:SECRET", help="one of the edge's access.keys")
    parser.add_argument("--ttl", default="1h", metavar="DURATION", help='valid for this long (default "1h")')


def run(args: argparse.Namespace) -> int:
    """Print the signed target on stdout; a bad key, path or TTL is a UsageError (exit 2)."""
    if not args.target.startswith("/") or any(c in args.target for c in " \t\r\n#"):
        raise UsageError(f"sign-url: {args.target!r}: expected a path like /a/b.bin?q=1")
    try:
        ttl = parse_duration(args.ttl, "--ttl")
    except ConfigError as e:
        raise UsageError(str(e)) from None
    key = parse_key(args.key)
    print(sign_url(key, args.target, int(clock.now() + ttl)))
    return 0
