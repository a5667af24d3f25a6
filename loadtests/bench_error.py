"""The one exception the bench reports: a single line and the code the script exits with."""

from __future__ import annotations


class BenchError(Exception):
    """A failure to report in one line; exit_code is what the script exits with."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code
