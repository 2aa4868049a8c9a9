"""A path operation that yields (JSON Lines), and response classes."""

from collections.abc import AsyncIterable

from pydantic import BaseModel

from rawserve import FastAPI
from rawserve.responses import HTMLResponse, PlainTextResponse


class Item(BaseModel):
    name: str
    description: str | None


app = FastAPI(title="Streaming")


@app.get("/items/stream")
async def stream_items() -> AsyncIterable[Item]:
    yield Item(name="Plumbus", description="A multi-purpose household device.")


@app.get("/page", response_class=HTMLResponse)
async def page():
    return "<h1>hi</h1>"


@app.get("/text", response_class=PlainTextResponse, responses={404: {"description": "Not here"}})
async def text():
    return "hi"
