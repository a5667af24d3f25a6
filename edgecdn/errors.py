"""The small error tree. Failures carry who is to blame and whether another try could succeed.

aiohttp and OS exceptions are translated into these once, in the origin client and the stores.
"""


class EdgeError(Exception):
    """Base of every error edgecdn raises on purpose."""


class ConfigError(EdgeError):
    """Bad configuration; the message names the key: `cache.max_object_size: must be > 0`."""


class UsageError(EdgeError):
    """Bad command-line input; the CLI prints the message as one line and exits 2."""


class OriginError(EdgeError):
    """The origin failed us. `status` is what the client gets; `detail` goes into Cache-Status."""

    retryable = False
    status = 502
    detail = "origin-error"


class OriginConnectError(OriginError):
    retryable = True
    detail = "origin-unreachable"


class OriginTimeout(OriginError):
    retryable = True
    status = 504
    detail = "origin-timeout"


class OriginBodyError(OriginError):
    """The body broke off after the head arrived (reset, short read, idle timeout)."""

    retryable = True
    detail = "origin-body-incomplete"


class HashMismatch(OriginError):
    """A versioned URL's body does not hash to its name: never stored, answered 502."""

    detail = "hash-mismatch"


class StorageError(EdgeError):
    """A cache store failed. Never fails a request: the edge serves from the origin instead.

    `cause` names the failure for metrics and logs: an errno name (`ENOSPC`, `EIO`), `timeout`, `index`
    (SQLite refused), `size-mismatch` (a body file that disagrees with its entry).
    """

    def __init__(self, message: str, cause: str = "io") -> None:
        super().__init__(message)
        self.cause = cause


class AdminError(EdgeError):
    """A refused admin API call: the 4xx/5xx to answer and the JSON `{"error", "detail"}` it carries."""

    def __init__(self, status: int, error: str, detail: object = None) -> None:
        super().__init__(error)
        self.status = status
        self.error = error
        self.detail = detail
