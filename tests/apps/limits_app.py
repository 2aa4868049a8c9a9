"""An app for the connection-limit tests: long and unique response headers,
uploads held in memory, streams, and handlers that count their cancellations."""

from __future__ import annotations

import asyncio

from rawserve import RawServe, Request, Response, StreamingResponse


def make_app() -> RawServe:
    """A fresh app (an app serves one server at a time)."""
    app = RawServe()
    app.state.cancelled = 0
    app.state.finished = 0

    @app.get("/redirect")
    async def redirect(request: Request) -> Response:
        # A redirect repeating what the client sent, as a login page's "next=" does.
        return Response(status_code=302, headers={"location": "/next?" + request.url.query})

    @app.get("/unique/{n:int}")
    async def unique(n: int) -> Response:
        # A header value no earlier response had: it would enter the encoder's table.
        return Response(b"", headers={"x-unique": f"{n:08d}" + "u" * 200})

    @app.post("/upload")
    async def upload(request: Request) -> dict[str, int]:
        try:
            body = await request.body()
        except BaseException:  # cancelled, or the client went away mid-body
            app.state.cancelled += 1
            raise
        app.state.finished += 1
        return {"received": len(body)}

    @app.get("/stream/{n:int}")
    async def stream(n: int, size: int = 1024) -> StreamingResponse:
        async def gen():  # type: ignore[no-untyped-def]
            for i in range(n):
                await asyncio.sleep(0.01)
                yield bytes([97 + i % 26]) * size

        return StreamingResponse(gen(), media_type="application/octet-stream")

    @app.get("/items/{i:int}")
    async def item(i: int) -> dict[str, int]:
        return {"item": i}

    @app.post("/sleep")
    async def sleep_then_read(request: Request, seconds: float = 1.0) -> dict[str, int]:
        # Not reading meanwhile: the server holds the client back, not vice versa.
        await asyncio.sleep(seconds)
        return {"received": len(await request.body())}

    @app.get("/slow")
    async def slow(seconds: float = 1.0) -> dict[str, float]:
        try:
            await asyncio.sleep(seconds)
        except asyncio.CancelledError:
            app.state.cancelled += 1
            raise
        app.state.finished += 1
        return {"slept": seconds}

    return app


app = make_app()
