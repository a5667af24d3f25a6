"""`edgecdn keygen`: print a new admin key as `KID:SECRET` for `--key` / `[admin] keys`."""

import argparse

from edgecdn.control.signing import generate_key


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `edgecdn keygen`."""
    parser.add_argument(
        "--kid",
        metavar="ID",
        help="key id, 1-32 of A-Z a-z 0-9 _ - (default: random, e.g. k1a2b3c4d)",
    )


def run(args: argparse.Namespace) -> int:
    """Print one key line on stdout, so `KEY=$(edgecdn keygen)` works; a bad --kid is UsageError."""
    print(generate_key(args.kid))
    return 0
