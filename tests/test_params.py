"""The markers at work: path, query, header, cookie, body, form and file
parameters bound from the request, and validation errors in FastAPI's exact shapes."""

# ruff: noqa: B008 - FastAPI's Query()/Depends() defaults are the API under test

# No ``from __future__ import annotations``: handlers defined inside tests
# refer to local names in their annotations, which must evaluate eagerly.

import decimal
import enum
import uuid
from dataclasses import dataclass, field
from typing import Annotated, Any, Literal

import pytest

from rawserve import (
    Body,
    Cookie,
    File,
    Form,
    Header,
    Path,
    Query,
    RawServe,
    Request,
    UploadFile,
)
from tests.test_app import call, multipart

try:
    import pydantic
except ImportError:  # pragma: no cover - the venv installs it for the tests
    pydantic = None  # type: ignore[assignment]

INT_MSG = "Input should be a valid integer, unable to parse string as an integer"


def detail(r: Any) -> list[dict[str, Any]]:
    assert r.status == 422, (r.status, r.body)
    errors: list[dict[str, Any]] = r.json()["detail"]
    return errors


class Color(str, enum.Enum):  # noqa: UP042 - the FastAPI docs' idiom
    red = "red"
    green = "green"


# -- path ---------------------------------------------------------------------------------


async def test_path_params_convert_and_validate() -> None:
    app = RawServe()

    @app.get("/items/{item_id}")
    async def item(item_id: int) -> dict[str, Any]:
        return {"item_id": item_id}

    @app.get("/files/{file_path:path}")
    async def files(file_path: str) -> str:
        return file_path

    @app.get("/models/{name}")
    async def model(name: Color) -> str:
        return name.value

    @app.get("/ge/{n}")
    async def ge(n: Annotated[int, Path(ge=1, title="n")]) -> int:
        return n

    assert (await call(app, "GET", "/items/42")).json() == {"item_id": 42}
    assert detail(await call(app, "GET", "/items/foo")) == [
        {"type": "int_parsing", "loc": ["path", "item_id"], "msg": INT_MSG, "input": "foo"}
    ]
    assert (await call(app, "GET", "/files/a/b/c.txt")).json() == "a/b/c.txt"
    assert (await call(app, "GET", "/models/green")).json() == "green"
    assert detail(await call(app, "GET", "/models/blue")) == [
        {
            "type": "enum",
            "loc": ["path", "name"],
            "msg": "Input should be 'red' or 'green'",
            "input": "blue",
            "ctx": {"expected": "'red' or 'green'"},
        }
    ]
    assert detail(await call(app, "GET", "/ge/0")) == [
        {
            "type": "greater_than_equal",
            "loc": ["path", "n"],
            "msg": "Input should be greater than or equal to 1",
            "input": "0",
            "ctx": {"ge": 1},
        }
    ]


def test_path_markers_must_match_the_path() -> None:
    app = RawServe()
    with pytest.raises(TypeError, match="not in the path"):
        app.get("/x")(lambda n=Path(): n)
    with pytest.raises(TypeError, match="path parameter"):
        app.get("/x/{n}")(lambda n=Query(): n)


# -- query --------------------------------------------------------------------------------


async def test_query_scalars_of_every_type() -> None:
    app = RawServe()

    @app.get("/q")
    async def q(
        i: int,
        f: float,
        b: bool,
        s: str,
        raw: bytes,
        u: uuid.UUID,
        d: decimal.Decimal,
        c: Color,
        lit: Literal["x", "y"] = "x",
        opt: int | None = None,
    ) -> dict[str, Any]:
        return {
            "i": i,
            "f": f,
            "b": b,
            "s": s,
            "raw": raw.decode(),
            "u": str(u),
            "d": str(d),
            "c": c.value,
            "lit": lit,
            "opt": opt,
        }

    u = "12345678-1234-5678-1234-567812345678"
    r = await call(app, "GET", f"/q?i=1&f=2.5&b=yes&s=hi&raw=by&u={u}&d=1.10&c=red&lit=y")
    assert r.json() == {
        "i": 1,
        "f": 2.5,
        "b": True,
        "s": "hi",
        "raw": "by",
        "u": u,
        "d": "1.10",
        "c": "red",
        "lit": "y",
        "opt": None,
    }
    for word, value in [("on", True), ("off", False), ("1", True), ("0", False), ("TRUE", True)]:
        r = await call(app, "GET", f"/q?i=1&f=1&b={word}&s=&raw=&u={u}&d=1&c=red&opt=4")
        assert (r.json()["b"], r.json()["opt"]) == (value, 4)


async def test_query_errors_are_collected_in_fastapi_shape() -> None:
    app = RawServe()

    @app.get("/items")
    async def items(skip: int = 0, limit: int = 10, needy: str = Query()) -> dict[str, Any]:
        return {"skip": skip, "limit": limit, "needy": needy}

    assert detail(await call(app, "GET", "/items?skip=a&limit=")) == [
        {"type": "int_parsing", "loc": ["query", "skip"], "msg": INT_MSG, "input": "a"},
        {"type": "int_parsing", "loc": ["query", "limit"], "msg": INT_MSG, "input": ""},
        {"type": "missing", "loc": ["query", "needy"], "msg": "Field required", "input": None},
    ]
    assert (await call(app, "GET", "/items?needy=x")).json() == {
        "skip": 0,
        "limit": 10,
        "needy": "x",
    }


async def test_query_lists_aliases_and_constraints() -> None:
    app = RawServe()

    @app.get("/items")
    async def items(
        q: Annotated[list[int] | None, Query()] = None,
        tags: list[str] = Query(default=["a"]),
        item_query: str | None = Query(default=None, alias="item-query"),
        name: Annotated[str | None, Query(min_length=3, max_length=5, pattern="^fix")] = None,
        page: Annotated[int, Query(gt=0, le=100)] = 1,
    ) -> dict[str, Any]:
        return {"q": q, "tags": tags, "item_query": item_query, "name": name, "page": page}

    r = await call(app, "GET", "/items?q=1&q=2&item-query=z&name=fixed&page=100")
    assert r.json() == {"q": [1, 2], "tags": ["a"], "item_query": "z", "name": "fixed", "page": 100}
    r = await call(app, "GET", "/items?tags=x&tags=y")
    assert r.json()["tags"] == ["x", "y"]
    assert detail(await call(app, "GET", "/items?q=1&q=x&name=fi&page=0")) == [
        {"type": "int_parsing", "loc": ["query", "q", 1], "msg": INT_MSG, "input": "x"},
        {
            "type": "string_too_short",
            "loc": ["query", "name"],
            "msg": "String should have at least 3 characters",
            "input": "fi",
            "ctx": {"min_length": 3},
        },
        {
            "type": "greater_than",
            "loc": ["query", "page"],
            "msg": "Input should be greater than 0",
            "input": "0",
            "ctx": {"gt": 0},
        },
    ]
    assert detail(await call(app, "GET", "/items?name=foobar"))[0]["type"] == "string_too_long"
    assert detail(await call(app, "GET", "/items?name=abcd"))[0] == {
        "type": "string_pattern_mismatch",
        "loc": ["query", "name"],
        "msg": "String should match pattern '^fix'",
        "input": "abcd",
        "ctx": {"pattern": "^fix"},
    }


async def test_mutable_defaults_are_not_shared() -> None:
    app = RawServe()

    @app.get("/")
    async def root(tags: list[str] = Query(default=[])) -> list[str]:
        tags.append("x")
        return tags

    assert (await call(app, "GET", "/")).json() == ["x"]
    assert (await call(app, "GET", "/")).json() == ["x"]


# -- headers and cookies ------------------------------------------------------------------


async def test_headers_convert_underscores_and_repeat() -> None:
    app = RawServe()

    @app.get("/h")
    async def h(
        user_agent: str | None = Header(None),
        x_token: list[str] | None = Header(None),
        strange_header: str | None = Header(None, convert_underscores=False),
        x_count: Annotated[int, Header()] = 0,
    ) -> dict[str, Any]:
        return {"ua": user_agent, "tokens": x_token, "strange": strange_header, "count": x_count}

    r = await call(
        app,
        "GET",
        "/h",
        headers=[
            ("User-Agent", "curl"),
            ("X-Token", "a"),
            ("x-token", "b"),
            ("strange_header", "s"),
            ("X-Count", "7"),
        ],
    )
    assert r.json() == {"ua": "curl", "tokens": ["a", "b"], "strange": "s", "count": 7}
    assert detail(await call(app, "GET", "/h", headers={"x-count": "n"})) == [
        {"type": "int_parsing", "loc": ["header", "x-count"], "msg": INT_MSG, "input": "n"}
    ]


async def test_required_header_and_cookies() -> None:
    app = RawServe()

    @app.get("/c")
    async def c(
        x_key: str = Header(), session: str = Cookie(), n: int | None = Cookie(None)
    ) -> Any:
        return [x_key, session, n]

    r = await call(app, "GET", "/c", headers={"x-key": "k", "cookie": "session=abc; n=5"})
    assert r.json() == ["k", "abc", 5]
    assert detail(await call(app, "GET", "/c")) == [
        {"type": "missing", "loc": ["header", "x-key"], "msg": "Field required", "input": None},
        {"type": "missing", "loc": ["cookie", "session"], "msg": "Field required", "input": None},
    ]


# -- JSON bodies --------------------------------------------------------------------------


@dataclass
class Point:
    x: int
    y: int
    label: str = "p"
    tags: list[str] = field(default_factory=list)


async def test_dict_and_list_bodies() -> None:
    app = RawServe()

    @app.post("/dict")
    async def d(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    @app.post("/list")
    async def lst(values: list[float]) -> float:
        return sum(values)

    assert (await call(app, "POST", "/dict", json_body={"a": [1, 2]})).json() == {"a": [1, 2]}
    assert (await call(app, "POST", "/list", json_body=[1, 2.5])).json() == 3.5
    assert detail(await call(app, "POST", "/dict", json_body=[1])) == [
        {
            "type": "dict_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary",
            "input": [1],
        }
    ]
    assert detail(await call(app, "POST", "/dict")) == [
        {"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}
    ]
    assert detail(await call(app, "POST", "/list", json_body=["a"])) == [
        {
            "type": "float_parsing",
            "loc": ["body", 0],
            "msg": "Input should be a valid number, unable to parse string as a number",
            "input": "a",
        }
    ]


async def test_invalid_json_is_422_json_invalid() -> None:
    app = RawServe()

    @app.post("/dict")
    async def d(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    r = await call(
        app, "POST", "/dict", body=b'{"a": ', headers={"content-type": "application/json"}
    )
    assert detail(r) == [
        {
            "type": "json_invalid",
            "loc": ["body", 6],
            "msg": "JSON decode error",
            "input": {},
            "ctx": {"error": "Expecting value"},
        }
    ]


async def test_content_type_decides_whether_the_body_is_json() -> None:
    app = RawServe()

    @app.post("/dict")
    async def d(payload: dict[str, Any]) -> dict[str, Any]:
        return payload

    body = b'{"a": 1}'
    for ctype in ("application/json", "application/json; charset=utf-8", "application/vnd.x+json"):
        r = await call(app, "POST", "/dict", body=body, headers={"content-type": ctype})
        assert r.json() == {"a": 1}
    # FastAPI's strict_content_type: no content-type, or another one, is not JSON.
    for headers in ({}, {"content-type": "text/plain"}):
        errs = detail(await call(app, "POST", "/dict", body=body, headers=headers))
        assert errs == [
            {
                "type": "dict_type",
                "loc": ["body"],
                "msg": "Input should be a valid dictionary",
                "input": body.decode(),
            }
        ]

    lenient = RawServe(strict_content_type=False)
    lenient.post("/dict")(d)
    assert (await call(lenient, "POST", "/dict", body=body)).json() == {"a": 1}


async def test_dataclass_body() -> None:
    app = RawServe()

    @app.post("/points")
    async def points(p: Point) -> dict[str, Any]:
        assert isinstance(p, Point)
        return {"sum": p.x + p.y, "label": p.label, "tags": p.tags}

    r = await call(app, "POST", "/points", json_body={"x": 1, "y": "2", "tags": ["t"]})
    assert r.json() == {"sum": 3, "label": "p", "tags": ["t"]}
    assert detail(await call(app, "POST", "/points", json_body={"x": "a"})) == [
        {"type": "int_parsing", "loc": ["body", "x"], "msg": INT_MSG, "input": "a"},
        {"type": "missing", "loc": ["body", "y"], "msg": "Field required", "input": {"x": "a"}},
    ]


if pydantic is not None:

    class Item(pydantic.BaseModel):
        name: str
        price: float
        tax: float | None = None

    class User(pydantic.BaseModel):
        username: str


async def test_pydantic_model_body() -> None:
    app = RawServe()

    @app.post("/items")
    async def create(item: Item) -> dict[str, Any]:
        assert isinstance(item, Item)
        return {"name": item.name, "total": item.price + (item.tax or 0)}

    r = await call(app, "POST", "/items", json_body={"name": "x", "price": "2.5", "tax": 1})
    assert r.json() == {"name": "x", "total": 3.5}
    payload = {"price": "cheap"}
    assert detail(await call(app, "POST", "/items", json_body=payload)) == [
        {"type": "missing", "loc": ["body", "name"], "msg": "Field required", "input": payload},
        {
            "type": "float_parsing",
            "loc": ["body", "price"],
            "msg": "Input should be a valid number, unable to parse string as a number",
            "input": "cheap",
        },
    ]
    assert detail(
        await call(
            app, "POST", "/items", body=b"null", headers={"content-type": "application/json"}
        )
    ) == [{"type": "missing", "loc": ["body"], "msg": "Field required", "input": None}]
    r = await call(
        app, "POST", "/items", body=b'{"name": "x",', headers={"content-type": "application/json"}
    )
    assert detail(r)[0]["type"] == "json_invalid"
    assert detail(r)[0]["loc"] == ["body", 13]


async def test_embed_and_several_body_params() -> None:
    app = RawServe()

    @app.put("/embed")
    async def embed(item: Item = Body(embed=True)) -> str:
        return item.name

    @app.put("/many/{item_id}")
    async def many(
        item_id: int, item: Item, user: User, importance: Annotated[int, Body(gt=0)]
    ) -> dict[str, Any]:
        return {"id": item_id, "item": item.name, "user": user.username, "importance": importance}

    r = await call(app, "PUT", "/embed", json_body={"item": {"name": "a", "price": 1}})
    assert r.json() == "a"
    assert detail(await call(app, "PUT", "/embed", json_body={"name": "a", "price": 1})) == [
        {"type": "missing", "loc": ["body", "item"], "msg": "Field required", "input": None}
    ]
    body = {"item": {"name": "a", "price": 1}, "user": {"username": "u"}, "importance": 5}
    r = await call(app, "PUT", "/many/3", json_body=body)
    assert r.json() == {"id": 3, "item": "a", "user": "u", "importance": 5}
    bad = {"item": {"name": "a"}, "importance": 0}
    assert detail(await call(app, "PUT", "/many/3", json_body=bad)) == [
        {
            "type": "missing",
            "loc": ["body", "item", "price"],
            "msg": "Field required",
            "input": {"name": "a"},
        },
        {"type": "missing", "loc": ["body", "user"], "msg": "Field required", "input": None},
        {
            "type": "greater_than",
            "loc": ["body", "importance"],
            "msg": "Input should be greater than 0",
            "input": 0,
            "ctx": {"gt": 0},
        },
    ]
    assert detail(await call(app, "PUT", "/many/3", json_body=[1]))[0] == {
        "type": "missing",
        "loc": ["body", "item"],
        "msg": "Field required",
        "input": None,
    }


async def test_optional_body_and_model_list() -> None:
    app = RawServe()

    @app.post("/opt")
    async def opt(item: Item | None = None) -> str | None:
        return item.name if item else None

    @app.post("/batch")
    async def batch(items: list[Item]) -> int:
        return len(items)

    assert (await call(app, "POST", "/opt")).json() is None
    assert (await call(app, "POST", "/opt", json_body={"name": "n", "price": 1})).json() == "n"
    r = await call(app, "POST", "/batch", json_body=[{"name": "a", "price": 1}, {"name": "b"}])
    assert detail(r) == [
        {
            "type": "missing",
            "loc": ["body", 1, "price"],
            "msg": "Field required",
            "input": {"name": "b"},
        }
    ]


async def test_raw_bytes_and_scalar_bodies() -> None:
    app = RawServe()

    @app.post("/raw")
    async def raw(data: bytes = Body()) -> int:
        return len(data)

    @app.post("/scalar")
    async def scalar(n: int = Body()) -> int:
        return n * 2

    blob = bytes(range(256))
    r = await call(
        app, "POST", "/raw", body=blob, headers={"content-type": "application/octet-stream"}
    )
    assert r.json() == 256
    assert (await call(app, "POST", "/scalar", json_body=21)).json() == 42


# -- forms and files ----------------------------------------------------------------------


async def test_upload_file_and_form_fields() -> None:
    app = RawServe()

    @app.post("/upload")
    async def upload(
        file: UploadFile,
        note: str = Form(),
        count: int = Form(1),
        tags: list[str] = Form([]),
    ) -> dict[str, Any]:
        data = await file.read()
        return {
            "filename": file.filename,
            "type": file.content_type,
            "size": len(data),
            "note": note,
            "count": count,
            "tags": tags,
        }

    headers, body = multipart(
        [
            ("file", ("a.png", b"\x89PNG" * 10, "image/png")),
            ("note", "hi"),
            ("tags", "x"),
            ("tags", "y"),
        ]
    )
    r = await call(app, "POST", "/upload", headers=headers, body=body)
    assert r.json() == {
        "filename": "a.png",
        "type": "image/png",
        "size": 40,
        "note": "hi",
        "count": 1,
        "tags": ["x", "y"],
    }
    headers, body = multipart([("note", ""), ("count", "z")])
    assert detail(await call(app, "POST", "/upload", headers=headers, body=body)) == [
        {"type": "missing", "loc": ["body", "file"], "msg": "Field required", "input": None},
        {"type": "missing", "loc": ["body", "note"], "msg": "Field required", "input": None},
        {"type": "int_parsing", "loc": ["body", "count"], "msg": INT_MSG, "input": "z"},
    ]


async def test_many_files_and_bytes_files() -> None:
    app = RawServe()

    @app.post("/files")
    async def files(files: list[UploadFile], raw: bytes = File()) -> dict[str, Any]:
        return {"names": [f.filename for f in files], "raw": raw.decode()}

    headers, body = multipart(
        [
            ("files", ("1.txt", b"1", "text/plain")),
            ("files", ("2.txt", b"2", "text/plain")),
            ("raw", ("r.bin", b"rawdata", "application/octet-stream")),
        ]
    )
    r = await call(app, "POST", "/files", headers=headers, body=body)
    assert r.json() == {"names": ["1.txt", "2.txt"], "raw": "rawdata"}


async def test_urlencoded_form_and_bad_multipart() -> None:
    app = RawServe()

    @app.post("/login")
    async def login(username: str = Form(), password: str = Form()) -> str:
        return f"{username}:{password}"

    r = await call(
        app,
        "POST",
        "/login",
        body=b"username=a&password=b%21",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.json() == "a:b!"
    r = await call(
        app,
        "POST",
        "/login",
        body=b"--nope\r\ngarbage",
        headers={"content-type": "multipart/form-data; boundary=zzz"},
    )
    # As starlette: the multipart parser's complaint is the 400's detail.
    assert r.status == 400
    assert "boundary" in r.json()["detail"]


async def test_a_file_where_text_is_expected_is_422() -> None:
    app = RawServe()

    @app.post("/note")
    async def note(text: str = Form()) -> str:
        return text

    headers, body = multipart([("text", ("a.txt", b"abc", "text/plain"))])
    errors = detail(await call(app, "POST", "/note", headers=headers, body=body))
    assert [(e["type"], e["loc"]) for e in errors] == [("string_type", ["body", "text"])]


async def test_form_model() -> None:
    class Login(pydantic.BaseModel):
        username: str
        remember: bool = False

    app = RawServe()

    @app.post("/login")
    async def login(data: Annotated[Login, Form()]) -> dict[str, Any]:
        return data.model_dump()

    r = await call(
        app,
        "POST",
        "/login",
        body=b"username=a&remember=on",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert r.json() == {"username": "a", "remember": True}


# -- special parameters -------------------------------------------------------------------


async def test_request_parameter_and_annotated_style() -> None:
    app = RawServe()

    @app.get("/r/{x}")
    async def r(
        request: Request, x: Annotated[int, Path()], y: Annotated[int, Query(ge=0)] = 0
    ) -> Any:
        return [request.method, request.path_params, x, y]

    assert (await call(app, "GET", "/r/4?y=2")).json() == ["GET", {"x": "4"}, 4, 2]
