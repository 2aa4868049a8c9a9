"""The default answers to errors, for handlers that fall back to them.

``server_error_response`` is the one 500 every part of rawserve sends when
something failed on the server's side: the app when a handler raised, and the
stream driver when a response object failed before its first byte.
"""

from __future__ import annotations

from rawserve.responses import JSONResponse, Response


def server_error_response() -> Response:
    """500 with no internals in it (the traceback goes to the log only)."""
    # FastAPI sends this as text/plain; rawserve answers every error in JSON
    # (docs/ARCHITECTURE.md, "Errors"), with the same words.
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)
