"""rawserve: an inference server that speaks HTTP/1.1, HTTP/2 and HTTP/3 itself."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rawserve import status
from rawserve.applications import RawServe
from rawserve.background import BackgroundTasks
from rawserve.core.config import Config
from rawserve.core.priority import Priority
from rawserve.datastructures import UploadFile
from rawserve.exceptions import HTTPException
from rawserve.params import Body, Cookie, Depends, File, Form, Header, Path, Query, Security
from rawserve.requests import Request
from rawserve.responses import (
    FileResponse,
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from rawserve.routing import APIRouter

if TYPE_CHECKING:
    from rawserve.serving.server import Server, run

# A FastAPI program moves over by changing ``fastapi`` to ``rawserve`` in its imports.
FastAPI = RawServe

__all__ = [
    "APIRouter",
    "BackgroundTasks",
    "Body",
    "Config",
    "Cookie",
    "Depends",
    "FastAPI",
    "File",
    "FileResponse",
    "Form",
    "HTMLResponse",
    "HTTPException",
    "Header",
    "JSONResponse",
    "Path",
    "PlainTextResponse",
    "Priority",
    "Query",
    "RawServe",
    "RedirectResponse",
    "Request",
    "Response",
    "Security",
    "Server",
    "StreamingResponse",
    "UploadFile",
    "run",
    "status",
]


def __getattr__(name: str) -> Any:
    # The server (sockets, TLS, event loop policy) loads only when asked for:
    # importing the app surface stays cheap and socket-free.
    if name in ("Server", "run"):
        from rawserve.serving import server

        return getattr(server, name)
    raise AttributeError(f"module 'rawserve' has no attribute {name!r}")
