"""``POST /predict/stream``: newline-delimited JSON inputs in, one result line per
input out, while the client is still sending (full duplex on HTTP/2, chunked
on HTTP/1.1); ``Accept: text/event-stream`` gets Server-Sent Events instead.

Each input line is ``{"inputs": [...]}`` (one row); each result line is what
``POST /predict`` answers for that row, plus its ``index`` (the line number,
from 0). Results keep input order, or with ``?ordered=false`` leave as they
finish. A malformed line answers an error line (``{"index", "error"}``) and
the stream goes on.

Backpressure end to end: at most ``WINDOW`` inputs are in flight; past that
the body is not read, so flow control slows a client that sends faster than
the model runs, and nothing is buffered without bound (a line longer than
``MAX_LINE_BYTES`` is an error line, its bytes dropped as they arrive).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import orjson

from rawserve.inference.app import predict
from rawserve.inference.app.application import InferenceApp
from rawserve.inference.app.errors import detail_error
from rawserve.inference.app.submit import Answer, Encoder, deadline_s, infer_cached, prepare
from rawserve.inference.cache import CachedResult, result_path
from rawserve.requests import Request
from rawserve.responses import Response, StreamingResponse
from rawserve.routing import APIRouter

router = APIRouter()

WINDOW = 32
MAX_LINE_BYTES = 1 << 20
NDJSON = "application/x-ndjson"
SSE = "text/event-stream"


async def lines(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes | None]:
    """Lines of a byte stream without their newline; None for a line that
    was too long (dropped, never held whole)."""
    buf = bytearray()
    overlong = False
    async for chunk in chunks:
        start = 0
        while True:
            end = chunk.find(b"\n", start)
            if end < 0:
                if not overlong:
                    buf += chunk[start:]
                    if len(buf) > MAX_LINE_BYTES:
                        overlong = True
                        buf.clear()
                break
            if overlong:
                yield None
            else:
                buf += chunk[start:end]
                yield bytes(buf)
            buf.clear()
            overlong = False
            start = end + 1
    if overlong:
        yield None
    elif buf.strip():
        yield bytes(buf)


def _prepare_row(app: InferenceApp, name: str, rows: Any) -> tuple[dict[str, Any], str]:
    """One row for the default model, validated and keyed as /predict keys it."""
    model = app.engine.model(name)
    return prepare(
        app,
        name,
        {model.inputs[0].name: rows.reshape(1, -1)},
        representation=predict.representation(False),
        outputs=None,
    )


async def _infer_row(
    app: InferenceApp,
    request: Request,
    name: str,
    arrays: dict[str, Any],
    key: str,
    encode: Encoder,
    timeout_s: float | None,
) -> Answer:
    return await infer_cached(
        app,
        request,
        name,
        arrays,
        key,
        encode=encode,
        urgency=None,
        timeout_s=timeout_s,
        outputs=None,
    )


def _error_line(index: int, message: str) -> dict[str, Any]:
    return {"index": index, "error": message}


@router.post("/predict/stream")
async def predict_stream(request: Request, ordered: bool = True) -> Response:
    app: InferenceApp = request.app
    name = app.default_model
    if name is None or not app.engine.ready:
        return detail_error("models are still loading", 503, {"retry-after": "1"})
    model = app.engine.model(name)
    sse = SSE in (request.headers.get("accept") or "")
    encode = predict.encoder(name, model.labels, False)
    limit = app.settings.max_request_elements
    timeout_s = deadline_s(request, None)

    async def one(index: int, line: bytes | None) -> dict[str, Any]:
        if line is None:
            return _error_line(index, f"the line is longer than {MAX_LINE_BYTES} bytes")
        try:
            rows = predict._json_rows(line, limit)
            if rows.ndim == 1:
                rows = rows.reshape(1, -1)
            if rows.shape[0] != 1:
                return _error_line(index, 'each line carries one row: {"inputs": [...]}')
            arrays, key = _prepare_row(app, name, rows)
            got = await _infer_row(app, request, name, arrays, key, encode, timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return _error_line(index, _message(exc))
        body: dict[str, Any] = orjson.loads(got.value.body)
        return {"index": index, **body}

    async def results() -> AsyncIterator[bytes]:
        # Tasks in input order (ordered), or ("done", task) as each finishes and
        # ("end", count) once the body is read (unordered).
        order: asyncio.Queue[asyncio.Task[dict[str, Any]] | None] = asyncio.Queue()
        finished: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        tasks: set[asyncio.Task[dict[str, Any]]] = set()
        slots = asyncio.Semaphore(WINDOW)

        async def produce() -> None:
            count = 0
            try:
                async for line in lines(request.stream()):
                    if line is not None and not line.strip():
                        continue
                    await slots.acquire()  # WINDOW in flight: stop reading the body
                    task = asyncio.get_running_loop().create_task(one(count, line))
                    tasks.add(task)
                    if ordered:
                        order.put_nowait(task)
                    else:
                        task.add_done_callback(lambda t: finished.put_nowait(("done", t)))
                    count += 1
            finally:
                order.put_nowait(None)
                finished.put_nowait(("end", count))

        producer = asyncio.get_running_loop().create_task(produce())
        try:
            if ordered:
                while (task := await order.get()) is not None:
                    item = await task
                    tasks.discard(task)
                    slots.release()
                    yield _frame(item, sse)
            else:
                total: int | None = None
                sent = 0
                while total is None or sent < total:
                    kind, value = await finished.get()
                    if kind == "end":
                        total = value
                        continue
                    tasks.discard(value)
                    slots.release()
                    sent += 1
                    yield _frame(value.result(), sse)
            await producer  # raises what ended the body early (a reset, a limit)
        finally:
            producer.cancel()
            for task in tasks:
                task.cancel()
            with contextlib.suppress(BaseException):
                await producer

    return StreamingResponse(results(), media_type=SSE if sse else NDJSON)


def _frame(item: dict[str, Any], sse: bool) -> bytes:
    data = orjson.dumps(item)
    if not sse:
        return data + b"\n"
    event = b"error" if "error" in item else b"result"
    index = str(item["index"]).encode()
    return b"event: " + event + b"\nid: " + index + b"\ndata: " + data + b"\n\n"


def _message(exc: Exception) -> str:
    return str(exc) or type(exc).__name__


# -- POST /predict/batch -----------------------------------------------------------

MAX_BATCH_ITEMS = 1024


@router.post("/predict/batch")
async def predict_batch(request: Request) -> Response:
    """``{"items": [[...], ...]}``: answers at once with the path of each
    item's result (``{"results": [...]}``, in item order) and computes them
    in the background. A client that allows push (HTTP/2) gets each result
    pushed the moment it is ready (cached ones at once); otherwise it GETs
    them, and ``GET /results/{key}`` of one still being computed waits."""
    app: InferenceApp = request.app
    name = app.default_model
    if name is None or not app.engine.ready:
        return detail_error("models are still loading", 503, {"retry-after": "1"})
    if app.cache is None:
        return detail_error("/predict/batch needs the result cache (it is off: --no-cache)", 409)
    model = app.engine.model(name)
    try:
        payload = orjson.loads(await request.body())
    except orjson.JSONDecodeError as exc:
        return detail_error(f"the body is not valid JSON: {exc}", 422)
    items = payload.get("items") if isinstance(payload, dict) else None
    if not isinstance(items, list) or not items:
        return detail_error('expected a JSON object {"items": [[...], ...]} with rows', 422)
    if len(items) > MAX_BATCH_ITEMS:
        return detail_error(f"at most {MAX_BATCH_ITEMS} items per batch, got {len(items)}", 413)
    encode = predict.encoder(name, model.labels, False)
    limit = app.settings.max_request_elements
    prepared: list[tuple[dict[str, Any], str]] = []
    for i, item in enumerate(items):
        try:
            rows = predict._json_rows(orjson.dumps({"inputs": item}), limit)
            if rows.ndim != 1 and rows.shape[0] != 1:
                raise ValueError("each item is one row of numbers")
            arrays, key = _prepare_row(app, name, rows)
        except Exception as exc:
            return detail_error(f"items[{i}]: {_message(exc)}", 422)
        prepared.append((arrays, key))
    timeout_s = deadline_s(request, None)
    paths: list[str] = []
    tasks: list[asyncio.Task[CachedResult]] = []
    for arrays, key in prepared:
        paths.append(result_path(key))

        async def compute(arrays: dict[str, Any] = arrays, key: str = key) -> CachedResult:
            got = await _infer_row(app, request, name, arrays, key, encode, timeout_s)
            return got.value

        tasks.append(app.spawn(compute()))
    manifest = orjson.dumps({"results": paths, "model": name})
    headers = {"content-type": "application/json"}
    if not request.can_push:
        return Response(manifest, 202, headers)

    async def manifest_then_pushes() -> AsyncIterator[bytes]:
        # The stream stays open until every result is promised: a push is
        # promised on its request's stream, which must not have ended.
        pushed: set[str] = set()
        for task in tasks:  # cached results are ready now: push them first
            if task.done() and not task.cancelled() and task.exception() is None:
                await _push(request, task.result().key, pushed)
        yield manifest
        for next_done in asyncio.as_completed([asyncio.shield(t) for t in tasks]):
            try:
                value = await next_done
            except Exception:
                continue  # refused or failed: GET /results/{key} says why (404)
            await _push(request, value.key, pushed)

    return StreamingResponse(manifest_then_pushes(), status_code=202, headers=headers)


async def _push(request: Request, key: str, pushed: set[str]) -> None:
    path = result_path(key)
    if path not in pushed:
        pushed.add(path)
        await request.push(path)
