"""A small app for the server tests: echo, big bodies, slow handlers, JSON."""

from __future__ import annotations

import asyncio

from rawserve import HTTPException, RawServe, Request, Response, StreamingResponse

app = RawServe()
app.state.handled = 0
app.state.cancelled = 0


@app.get("/")
async def root() -> dict[str, str]:
    return {"hello": "world"}


@app.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@app.post("/echo")
async def echo(request: Request) -> Response:
    body = await request.body()
    return Response(body, media_type="application/octet-stream")


@app.post("/count")
async def count(request: Request) -> dict[str, int]:
    n = 0
    async for chunk in request.stream():
        n += len(chunk)
    return {"received": n}


@app.get("/bytes/{n:int}")
async def many_bytes(n: int) -> Response:
    return Response(b"x" * n, media_type="application/octet-stream")


@app.get("/stream/{n:int}")
async def stream(n: int, size: int = 1024) -> StreamingResponse:
    async def gen():  # type: ignore[no-untyped-def]
        for _ in range(n):
            yield b"y" * size

    return StreamingResponse(gen(), media_type="application/octet-stream")


@app.get("/slow")
async def slow(seconds: float = 0.5) -> dict[str, float]:
    try:
        await asyncio.sleep(seconds)
    except asyncio.CancelledError:
        app.state.cancelled += 1
        raise
    app.state.handled += 1
    return {"slept": seconds}


@app.get("/items/{item_id}")
async def item(item_id: int, q: str | None = None) -> dict[str, object]:
    return {"item_id": item_id, "q": q}


@app.post("/json")
async def json_body(payload: dict[str, int]) -> dict[str, int]:
    return {"sum": sum(payload.values())}


@app.get("/fail")
async def fail() -> None:
    raise RuntimeError("boom: this must never reach the client")


@app.get("/teapot")
async def teapot() -> None:
    raise HTTPException(418, detail="short and stout")


@app.post("/sleep")
async def sleep_without_reading(seconds: float = 0.5) -> dict[str, float]:
    await asyncio.sleep(seconds)
    return {"slept": seconds}
