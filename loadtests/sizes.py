"""Object sizes as the command line writes them: 1k, 64k, 1m."""

from __future__ import annotations

import argparse
import re

UNITS = {"": 1, "b": 1, "k": 1024, "kib": 1024, "m": 1024**2, "mib": 1024**2}


def parse_size(text: str) -> int:
    m = re.fullmatch(r"\s*(\d+)\s*([a-zA-Z]*)\s*", text)
    if not m or m.group(2).lower() not in UNITS:
        raise argparse.ArgumentTypeError(f"bad size {text!r} (use e.g. 1k, 64k, 1m)")
    return int(m.group(1)) * UNITS[m.group(2).lower()]


def format_size(n: int) -> str:
    for unit, factor in (("m", 1024**2), ("k", 1024)):
        if n >= factor and n % factor == 0:
            return f"{n // factor}{unit}"
    return f"{n}b"
