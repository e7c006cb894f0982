"""API keys: ``--api-key`` for every endpoint, ``--admin-key`` for loading and unloading models.

Keys travel as ``Authorization: Bearer KEY`` and are compared in constant time. The admin
key opens every endpoint; without ``--admin-key``, the API key also opens load / unload.
"""
from __future__ import annotations

import hmac

from fastapi import Request

from modules.api.errors import ApiError
from modules.core.config import ServerOptions


def _given_key(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    return value.strip() if scheme.lower() == "bearer" else ""


def _matches(given: str, expected: str | None) -> bool:
    # compare_digest: no early exit at the first differing character, so timing does not reveal the key.
    return bool(expected) and hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def _refuse(given: str, what: str) -> ApiError:
    reason = "No API key was given" if not given else "The API key is not valid"
    return ApiError(401, f"{reason} {what}. Send it as the header 'Authorization: Bearer YOUR_KEY'.",
                    code="invalid_api_key")


class KeyCheck:
    """FastAPI dependencies built from the server options (no global state)."""

    def __init__(self, options: ServerOptions) -> None:
        self.api_key, self.admin_key = options.api_key, options.admin_key

    async def user(self, request: Request) -> None:
        if not self.api_key and not self.admin_key:
            return
        given = _given_key(request)
        if _matches(given, self.api_key) or _matches(given, self.admin_key):
            return
        if not self.api_key:  # only an admin key is set: ordinary endpoints stay open
            return
        raise _refuse(given, "for this server (it was started with --api-key)")

    async def admin(self, request: Request) -> None:
        expected = self.admin_key or self.api_key
        if not expected:
            return
        given = _given_key(request)
        if not _matches(given, expected):
            what = "for loading or unloading models (this needs the --admin-key)" if self.admin_key else \
                "for this server (it was started with --api-key)"
            raise _refuse(given, what)
