"""Unsafe methods: invalidation (RFC 9111 §4.4) and a POST's answer reused for GET (RFC 9110 §9.3.3)."""

from __future__ import annotations

import pytest

from edgecdn.http.fields import Headers
from edgecdn.policy.invalidate import invalidated_keys, post_answer_reusable

T = "/cart?id=1"


@pytest.mark.parametrize(
    ("method", "status", "headers", "want"),
    [
        pytest.param("GET", 200, (("Location", "/a"),), (), id="rfc9111-4.4-safe-method-invalidates-nothing"),
        pytest.param("POST", 500, (), (), id="rfc9111-4.4-error-invalidates-nothing"),
        pytest.param("POST", 200, (), (T,), id="rfc9111-4.4-target"),
        pytest.param(
            "PUT",
            201,
            (("Location", "/a"), ("Content-Location", "b")),
            (T, "/a", "/b"),
            id="rfc9111-4.4-both",
        ),
        pytest.param(
            "DELETE",
            204,
            (("Location", "http://other.example/a"),),
            (T,),
            id="rfc9111-4.4-never-another-host",
        ),
        pytest.param(
            "POST",
            303,
            (("Location", "http://edge.example/x?q=1"),),
            (T, "/x?q=1"),
            id="rfc9111-4.4-same-host",
        ),
    ],
)
def test_invalidated_keys(method: str, status: int, headers: Headers, want: tuple[str, ...]) -> None:
    assert invalidated_keys(method, status, T, "edge.example", headers) == want


@pytest.mark.parametrize(
    ("method", "status", "headers", "want"),
    [
        pytest.param(
            "POST",
            200,
            (("Content-Location", T), ("Cache-Control", "max-age=60")),
            True,
            id="rfc9110-9.3.3-reused",
        ),
        pytest.param(
            "POST",
            203,
            (
                ("Content-Location", "http://edge.example/cart?id=1"),
                ("Expires", "Thu, 01 Jan 2037 00:00:00 GMT"),
            ),
            True,
            id="rfc9110-8.7-absolute-same-uri-with-expires",
        ),
        pytest.param(
            "POST",
            200,
            (("Content-Location", T), ("CDN-Cache-Control", "s-maxage=60")),
            True,
            id="rfc9213-targeted",
        ),
        pytest.param(
            "POST", 200, (("Content-Location", T),), False, id="rfc9110-9.3.3-no-heuristic-freshness"
        ),
        pytest.param(
            "POST",
            200,
            (("Content-Location", "/cart?id=2"), ("Cache-Control", "max-age=60")),
            False,
            id="other-uri",
        ),
        pytest.param(
            "POST",
            200,
            (("Content-Location", "http://other.example/cart?id=1"), ("Cache-Control", "max-age=60")),
            False,
            id="rfc9111-4.4-never-another-host",
        ),
        pytest.param(
            "POST", 201, (("Content-Location", T), ("Cache-Control", "max-age=60")), False, id="created"
        ),
        pytest.param("PUT", 200, (("Content-Location", T), ("Cache-Control", "max-age=60")), False, id="put"),
    ],
)
def test_post_answer_reusable(method: str, status: int, headers: Headers, want: bool) -> None:
    assert post_answer_reusable(method, status, T, "edge.example", headers) is want
