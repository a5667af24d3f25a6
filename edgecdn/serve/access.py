"""Before any cache work: loops refused (RFC 8586), signed URLs, token traverse (targets are origin-form).

Rules of this file: a refusal is answered by the edge itself and never reaches an origin or the cache;
what comes out is the request to serve and the target to key it by, which never holds auth parameters.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

from edgecdn import clock
from edgecdn.config import AccessRule, Config
from edgecdn.control.signing import AdminKey, parse_keys
from edgecdn.control.urlsign import Invalid, strip_params, verify_url
from edgecdn.fetch.client import loop_detected
from edgecdn.policy.status import CacheStatus, cache_status_field
from edgecdn.serve import respond
from edgecdn.serve.request import Request
from edgecdn.serve.writer import ResponseWriter


class Admitted(NamedTuple):  # a NamedTuple: built per request, cheaper than a frozen dataclass
    request: Request  # origin-form, signed-URL parameters removed
    key_target: str  # what the cache key is made of: the target without any token


@functools.lru_cache(maxsize=4)
def _ring(keys: tuple[str, ...]) -> dict[str, AdminKey]:
    return parse_keys(keys)


def _refuse(out: ResponseWriter, status: int, message: str, detail: str) -> ResponseWriter:
    field = cache_status_field(CacheStatus.ERROR, detail=detail)
    return respond.error(out, status, message, cache_status=field, detail=detail)


def check(request: Request, cfg: Config, out: ResponseWriter) -> Admitted | ResponseWriter:
    """The request to serve and its key target, or the edge's own refusal."""
    if "CDN-Loop" in request.headers and loop_detected(tuple(request.headers.items()), cfg.origin.cdn_id):
        return _refuse(
            out, 508, f"loop detected: CDN-Loop already names {cfg.origin.cdn_id}", "loop-detected"
        )
    rule = _rule(cfg, request.path) if cfg.access.paths else None
    if rule is None:
        return Admitted(request, request.raw_path)
    if rule.mode == "signed":
        verdict = verify_url(_ring(cfg.access.keys), request.raw_path, now=clock.now())
        if isinstance(verdict, Invalid):
            return _refuse(out, 403, "signed URL required", verdict.reason.value)
        request = request.with_target(verdict.target)
        return Admitted(request, request.raw_path)
    if rule.token_header:
        if not request.headers.get(rule.token_header):
            return _refuse(out, 403, f"token required ({rule.token_header})", "token-missing")
        return Admitted(request, request.raw_path)
    if not request.query.get(rule.token_param):
        return _refuse(out, 403, f"token required ({rule.token_param})", "token-missing")
    return Admitted(request, strip_params(request.raw_path, (rule.token_param,)))


def _rule(cfg: Config, path: str) -> AccessRule | None:
    """The first rule whose prefix matches the decoded path (so %-escapes cannot dodge a rule)."""
    return next((r for r in cfg.access.paths if path.startswith(r.prefix)), None)
