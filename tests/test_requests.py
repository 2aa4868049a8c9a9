"""Request: lazy parsing of the request line and headers, the body API
(stream/body/json/form) over a BodyStream fed by hand, disconnects."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from rawserve.core.errors import BodyTooLarge, ClientDisconnected
from rawserve.core.events import RequestReceived
from rawserve.core.priority import Priority
from rawserve.datastructures import UploadFile
from rawserve.requests import JSONDecodeError, Request
from rawserve.serving.body import BodyStream


def make_request(
    target: str = "/",
    *,
    method: str = "GET",
    headers: list[tuple[bytes, bytes]] | None = None,
    body: bytes | list[bytes] | None = None,
    end: bool = True,
    limit: int = 64 * 1024 * 1024,
    **event_kw: object,
) -> tuple[Request, BodyStream]:
    event = RequestReceived(
        stream_id=1,
        method=method,
        target=target,
        headers=headers if headers is not None else [(b"host", b"testserver")],
        http_version=str(event_kw.pop("http_version", "1.1")),
        **event_kw,  # type: ignore[arg-type]
    )
    stream = BodyStream(limit=limit)
    if body is not None:
        for chunk in [body] if isinstance(body, bytes) else body:
            stream.feed(chunk)
    if end:
        stream.end()
    return Request(event, stream, client=("10.0.0.1", 4242), server=("127.0.0.1", 8000)), stream


def split(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


def encoded_form(
    data: dict[str, str] | None = None, files: dict[str, tuple[str, bytes, str]] | None = None
) -> tuple[bytes, bytes]:
    """A real multipart/form-data body as httpx (a client nobody here wrote) encodes it."""
    req = httpx.Request("POST", "http://x/", data=data, files=files)
    return req.read(), req.headers["content-type"].encode()


# -- request line, headers, URL ---------------------------------------------------


def test_construction_parses_nothing_until_asked() -> None:
    request, _ = make_request("/p?q=1", headers=[(b"host", b"h"), (b"cookie", b"a=1")])
    # Most inference handlers read only the body; these must stay unparsed.
    assert request._headers is None
    assert request._url is None
    assert request._query_params is None
    assert request._cookies is None
    assert request.query_params["q"] == "1"
    assert request._headers is None and request._url is None


def test_method_is_uppercase_and_version_kept() -> None:
    request, _ = make_request(method="post", http_version="2")
    assert request.method == "POST"
    assert request.http_version == "2"


def test_url_from_host_header() -> None:
    request, _ = make_request("/a/b%20c?x=1", headers=[(b"host", b"example.com:8080")])
    url = request.url
    assert url.path == "/a/b%20c"
    assert url.query == "x=1"
    assert url.scheme == "http"
    assert url.netloc == "example.com:8080"
    assert url.hostname == "example.com"
    assert url.port == 8080
    assert str(url) == "http://example.com:8080/a/b%20c?x=1"
    assert request.path == "/a/b%20c"
    assert str(request.base_url) == "http://example.com:8080/"


def test_url_prefers_http2_authority() -> None:
    request, _ = make_request(
        "/x", headers=[(b"host", b"ignored")], authority="api.local", scheme="https"
    )
    assert str(request.url) == "https://api.local/x"
    assert request.url.port is None
    assert request.url.is_secure


def test_url_falls_back_to_server_address() -> None:
    request, _ = make_request("/x", headers=[])
    assert str(request.url) == "http://127.0.0.1:8000/x"


def test_headers_case_insensitive_and_multi_valued() -> None:
    request, _ = make_request(
        headers=[(b"x-a", b"1"), (b"accept", b"text/html"), (b"x-a", b"2")],
    )
    h = request.headers
    assert h["X-A"] == "1"
    assert h.get("x-a") == "1"
    assert h.getlist("x-A") == ["1", "2"]
    assert "ACCEPT" in h
    assert "missing" not in h
    assert h.get("missing", "d") == "d"
    assert ("accept", "text/html") in h.items()
    with pytest.raises(KeyError):
        h["missing"]


def test_query_params_multi_and_blank() -> None:
    request, _ = make_request("/?a=1&a=2&b=&c&d=%C3%A9+x")
    qp = request.query_params
    assert qp["a"] == "2"
    assert qp.getlist("a") == ["1", "2"]
    assert qp["b"] == ""
    assert qp["c"] == ""
    assert qp["d"] == "é x"
    assert qp.get("zzz") is None
    assert qp.multi_items()[0] == ("a", "1")


def test_cookies_parsed_leniently() -> None:
    request, _ = make_request(
        headers=[(b"cookie", b'session=abc; theme="dark mode"; flag'), (b"cookie", b"b=2")]
    )
    assert request.cookies == {"session": "abc", "theme": "dark mode", "": "flag", "b": "2"}


def test_client_state_priority_path_params() -> None:
    request, _ = make_request(priority=Priority(1, True))
    assert request.client is not None
    assert request.client.host == "10.0.0.1"
    assert request.client.port == 4242
    assert request.priority == Priority(1, True)
    request.priority = Priority(6)
    assert request.priority.urgency == 6
    request.state.user = "u"
    assert request.state.user == "u"
    with pytest.raises(AttributeError):
        _ = request.state.nothing
    assert request.path_params == {}
    request.path_params["id"] = 3
    assert request.path_params["id"] == 3


# -- body -------------------------------------------------------------------------


async def test_body_joins_chunks_and_is_cached() -> None:
    request, _ = make_request(method="POST", body=[b"ab", b"cd", b"ef"])
    assert await request.body() == b"abcdef"
    assert await request.body() == b"abcdef"
    # stream() after body() yields the cached body rather than failing.
    assert [c async for c in request.stream()] == [b"abcdef"]


async def test_body_empty() -> None:
    request, _ = make_request(method="POST")
    assert await request.body() == b""
    assert [c async for c in request.stream()] == []


async def test_stream_yields_chunks_as_they_arrive() -> None:
    request, body = make_request(method="POST", end=False)
    received: list[bytes] = []

    async def consume() -> None:
        async for chunk in request.stream():
            received.append(chunk)

    task = asyncio.create_task(consume())
    await asyncio.sleep(0)
    body.feed(b"one")
    await asyncio.sleep(0)
    assert received == [b"one"]
    body.feed(b"two")
    body.end()
    await task
    assert received == [b"one", b"two"]


async def test_second_stream_without_cache_is_an_error() -> None:
    request, _ = make_request(method="POST", body=b"data")
    assert [c async for c in request.stream()] == [b"data"]
    with pytest.raises(RuntimeError):
        [c async for c in request.stream()]
    with pytest.raises(RuntimeError):
        await request.body()


async def test_json_valid_and_cached() -> None:
    request, _ = make_request(method="POST", body=[b'{"a": [1, 2', b', 3], "b": null}'])
    assert await request.json() == {"a": [1, 2, 3], "b": None}
    assert await request.json() is await request.json()


@pytest.mark.parametrize("payload", [b"{bad", b"", b'{"a": 1}}', b"\xff\xfe"])
async def test_invalid_json_raises_value_error_with_position(payload: bytes) -> None:
    request, _ = make_request(method="POST", body=payload)
    with pytest.raises(JSONDecodeError) as info:
        await request.json()
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, json.JSONDecodeError)
    assert info.value.pos >= 0


async def test_body_too_large_propagates() -> None:
    request, _ = make_request(method="POST", body=[b"x" * 10, b"x" * 10], limit=15)
    with pytest.raises(BodyTooLarge) as info:
        await request.body()
    assert info.value.status_code == 413


async def test_disconnect_is_visible_and_stops_body() -> None:
    request, body = make_request(method="POST", end=False)
    assert await request.is_disconnected() is False
    body.abort()
    assert await request.is_disconnected() is True
    with pytest.raises(ClientDisconnected):
        await request.body()


async def test_disconnect_wakes_a_waiting_reader() -> None:
    request, body = make_request(method="POST", body=b"partial", end=False)
    task = asyncio.create_task(request.body())
    await asyncio.sleep(0)
    body.abort()
    with pytest.raises(ClientDisconnected):
        await task


# -- forms ------------------------------------------------------------------------


async def test_form_of_other_content_type_is_empty() -> None:
    request, _ = make_request(
        method="POST", headers=[(b"content-type", b"application/json")], body=b"{}"
    )
    form = await request.form()
    assert len(form) == 0
    # The body was not consumed by form().
    assert await request.json() == {}


async def test_form_disconnect_propagates() -> None:
    body, ctype = encoded_form(files={"f": ("f", b"data" * 100, "x/y")})
    request, stream = make_request(
        method="POST", headers=[(b"content-type", ctype)], body=body[:50], end=False
    )
    # form() returns an awaitable (also an async context manager), not a coroutine.
    task = asyncio.ensure_future(request.form())
    await asyncio.sleep(0)
    stream.abort()
    with pytest.raises(ClientDisconnected):
        await task


async def test_form_as_async_context_manager_closes_files() -> None:
    body, ctype = encoded_form(data={"a": "1"}, files={"f": ("f", b"abc", "x/y")})
    request, _ = make_request(method="POST", headers=[(b"content-type", ctype)], body=body)
    async with request.form() as form:
        f = form["f"]
        assert isinstance(f, UploadFile)
        assert await f.read() == b"abc"
        assert not f.file.closed
    assert f.file.closed


def test_url_for_uses_the_apps_url_path_for() -> None:
    class App:
        def url_path_for(self, name: str, **params: object) -> str:
            return f"/{name}/{params['id']}"

    event = RequestReceived(1, "GET", "/x", [(b"host", b"h:81")], "1.1")
    request = Request(event, BodyStream(limit=10), app=App())
    assert str(request.url_for("items", id=3)) == "http://h:81/items/3"
    bare, _ = make_request()
    with pytest.raises(RuntimeError):
        bare.url_for("x")
