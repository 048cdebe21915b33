"""The ASGI front of the intake app: a FastAPI application whose hottest routes are answered
straight from ASGI, bypassing FastAPI's routing, dependency solving and middleware stack.

Owns ``IntakeAPI`` (the app class ``create_app`` returns) and the small ASGI helpers a hot
route needs: read the headers and the whole body, answer JSON. A hot route is registered
with ``IntakeAPI.hot(method, path, handler)``; the same path stays declared as a normal
FastAPI route, so it is published in ``/openapi.json`` and answers any request the hot path
does not take (other methods go through FastAPI and get its usual 405). A handler returns
``(status, content, headers)`` or raises ``fastapi.HTTPException``, rendered exactly as
FastAPI renders it (``{"detail": ...}`` with the exception's headers). Middleware added
with ``add_middleware`` does not see hot routes. No validation or storage here.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, HTTPException

Handler = Callable[[dict[str, str], bytes], Awaitable[tuple[int, Any, dict[str, str] | None]]]
_log = logging.getLogger("uvicorn.error")
_JSON = (b"content-type", b"application/json")


def render(content: Any) -> bytes:
    """JSON bytes exactly as Starlette's ``JSONResponse`` renders ``content``."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, indent=None,
                      separators=(",", ":")).encode("utf-8")


async def respond(send: Any, status: int, body: bytes,
                  headers: dict[str, str] | None = None,
                  content_type: tuple[bytes, bytes] = _JSON) -> None:
    """Send one complete response (``content-length`` set, keep-alive friendly)."""
    raw = [(b"content-length", str(len(body)).encode()), content_type]
    if headers:
        raw.extend((k.lower().encode("latin-1"), v.encode("latin-1"))
                   for k, v in headers.items())
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})


async def read_body(receive: Any) -> bytes | None:
    """The whole request body, or ``None`` when the client went away first."""
    chunks: list[bytes] = []
    while True:
        msg = await receive()
        if msg["type"] == "http.disconnect":
            return None
        chunk = msg.get("body", b"")
        if chunk:
            chunks.append(chunk)
        if not msg.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class IntakeAPI(FastAPI):
    """FastAPI plus hot routes (see the module docstring)."""

    def __init__(self, **kw: Any) -> None:
        super().__init__(**kw)
        self._hot: dict[tuple[str, str], Handler] = {}
        self.hot_enabled = True  # False: every request goes through FastAPI (tests compare)

    def hot(self, method: str, path: str, handler: Handler) -> None:
        """Answer ``method path`` with ``handler(headers, body)`` before FastAPI sees it;
        ``headers`` are the request headers, names lower-cased, first value of each."""
        self._hot[(method.upper(), path)] = handler

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and self.hot_enabled and not self.root_path:
            handler = self._hot.get((scope["method"], scope["path"]))
            if handler is not None:
                await self._answer(handler, scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    @staticmethod
    async def _answer(handler: Handler, scope: Any, receive: Any, send: Any) -> None:
        headers: dict[str, str] = {}
        for k, v in scope["headers"]:
            name = k.decode("latin-1").lower()
            if name not in headers:  # the first value, as Starlette's Headers.get
                headers[name] = v.decode("latin-1")
        body = await read_body(receive)
        if body is None:
            return
        try:
            status, content, extra = await handler(headers, body)
        except HTTPException as exc:
            await respond(send, exc.status_code, render({"detail": exc.detail}), exc.headers)
            return
        except Exception:  # as Starlette's ServerErrorMiddleware: log it, answer 500
            _log.exception("Exception in ASGI application (intake hot path)")
            await respond(send, 500, b"Internal Server Error", None,
                          (b"content-type", b"text/plain; charset=utf-8"))
            return
        await respond(send, status, content if isinstance(content, bytes) else render(content),
                      extra)
