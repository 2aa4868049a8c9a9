"""/openapi.json as FastAPI writes it, /docs and /redoc as FastAPI serves
them. The expected documents in tests/data/openapi/ are FastAPI's own output
for the apps in tests/apps/openapi/ (tools/make_openapi_expected.py)."""

from __future__ import annotations

import copy
import importlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from openapi_spec_validator import OpenAPIV31SpecValidator, OpenAPIV32SpecValidator

from rawserve import FastAPI, Query
from rawserve.openapi import docs
from rawserve.testclient import TestClient

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT / "tests" / "data" / "openapi"
APPS = ["items", "plain", "streaming"]


def expected(name: str) -> dict[str, Any]:
    result: dict[str, Any] = json.loads((DATA / f"{name}.json").read_text())
    return result


def validate(document: dict[str, Any]) -> None:
    """OpenAPI 3.1, except that JSON Lines responses carry ``itemSchema``, an
    OpenAPI 3.2 field FastAPI writes into its 3.1 documents too (and so do we):
    such documents are checked against 3.2."""
    if "itemSchema" in json.dumps(document):
        document = copy.deepcopy(document)
        document["openapi"] = "3.2.0"
        OpenAPIV32SpecValidator(document).validate()
    else:
        OpenAPIV31SpecValidator(document).validate()


@pytest.mark.parametrize("name", APPS)
def test_the_document_is_the_one_fastapi_writes(name: str) -> None:
    app = importlib.import_module(f"tests.apps.openapi.{name}").app
    document = app.openapi()
    assert document == expected(name)
    assert list(document) == list(expected(name))  # in FastAPI's order too
    validate(document)


def test_without_pydantic_rawserve_writes_the_same_document_for_plain_types() -> None:
    program = (
        "import json, sys\n"
        "sys.modules['pydantic'] = None  # import pydantic raises ImportError\n"
        "from tests.apps.openapi.plain import app\n"
        "print(json.dumps(app.openapi()))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == expected("plain")


def test_without_pydantic_dataclass_bodies_and_enums_are_components() -> None:
    program = """
import dataclasses, enum, json, sys
sys.modules['pydantic'] = None
from rawserve import FastAPI

class Color(str, enum.Enum):
    red = "red"
    blue = "blue"

@dataclasses.dataclass
class Point:
    x: int
    y: int = 0
    color: Color = Color.red

app = FastAPI()

@app.post("/points", status_code=201)
def add(point: Point) -> Point:
    return point

print(json.dumps(app.openapi()))
"""
    out = subprocess.run(
        [sys.executable, "-c", program], capture_output=True, text=True, cwd=ROOT, timeout=60
    )
    assert out.returncode == 0, out.stderr
    document = json.loads(out.stdout)
    validate(document)
    schemas = document["components"]["schemas"]
    assert schemas["Point"] == {
        "properties": {
            "x": {"type": "integer", "title": "X"},
            "y": {"type": "integer", "title": "Y", "default": 0},
            "color": {"$ref": "#/components/schemas/Color", "default": "red"},
        },
        "type": "object",
        "required": ["x"],
        "title": "Point",
    }
    assert schemas["Color"] == {"enum": ["red", "blue"], "title": "Color", "type": "string"}
    op = document["paths"]["/points"]["post"]
    assert op["requestBody"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Point"
    }
    assert op["responses"]["201"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Point"
    }


def test_openapi_json_docs_and_redoc_are_served() -> None:
    app = FastAPI(title="Served", version="2.0")

    @app.get("/items/{item_id}")
    def read(item_id: int, q: str | None = Query(None, max_length=5)) -> dict[str, Any]:
        return {"item_id": item_id}

    with TestClient(app) as client:
        r = client.get("/openapi.json")
        assert r.status_code == 200
        assert r.headers["content-type"] == "application/json"
        document = r.json()
        validate(document)
        assert document["info"] == {"title": "Served", "version": "2.0"}
        assert list(document["paths"]) == ["/items/{item_id}"]  # the docs routes are hidden

        page = client.get("/docs")
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        assert "<title>Served - Swagger UI</title>" in page.text
        assert f'src="{docs.SWAGGER_JS_URL}"' in page.text
        assert f'href="{docs.SWAGGER_CSS_URL}"' in page.text
        assert "url: '/openapi.json'" in page.text
        assert "oauth2RedirectUrl: window.location.origin + '/docs/oauth2-redirect'" in page.text
        assert "window.opener.swaggerUIRedirectOauth2" in client.get("/docs/oauth2-redirect").text

        redoc = client.get("/redoc")
        assert "<title>Served - ReDoc</title>" in redoc.text
        assert f'<script src="{docs.REDOC_JS_URL}"> </script>' in redoc.text
        assert '<redoc spec-url="/openapi.json"></redoc>' in redoc.text


def test_fastapis_default_asset_urls() -> None:
    # What FastAPI's pages load, so /docs looks the same.
    assert docs.SWAGGER_JS_URL == (
        "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui-bundle.js"
    )
    assert docs.SWAGGER_CSS_URL == "https://cdn.jsdelivr.net/npm/swagger-ui-dist@5/swagger-ui.css"
    assert docs.REDOC_JS_URL == "https://cdn.jsdelivr.net/npm/redoc@2/bundles/redoc.standalone.js"


def test_the_asset_urls_can_point_at_local_copies() -> None:
    app = FastAPI(
        swagger_js_url="/static/swagger-ui-bundle.js",
        swagger_css_url="/static/swagger-ui.css",
        swagger_favicon_url="/static/favicon.png",
        redoc_js_url="/static/redoc.standalone.js",
    )
    with TestClient(app) as client:
        page = client.get("/docs").text
        redoc = client.get("/redoc").text
    assert 'src="/static/swagger-ui-bundle.js"' in page
    assert 'href="/static/swagger-ui.css"' in page
    assert "cdn.jsdelivr.net" not in page
    assert 'src="/static/redoc.standalone.js"' in redoc
    # FastAPI's own helpers take the same arguments, for a docs route of one's own.
    html = docs.get_redoc_html(
        openapi_url="/openapi.json",
        title="x",
        redoc_js_url="/static/redoc.js",
        with_google_fonts=False,
    ).body.decode()
    assert "googleapis" not in html and "/static/redoc.js" in html


def test_openapi_url_none_turns_the_document_and_the_pages_off() -> None:
    app = FastAPI(openapi_url=None)

    @app.get("/")
    def root() -> dict[str, str]:
        return {}

    with TestClient(app) as client:
        for path in ("/openapi.json", "/docs", "/redoc", "/docs/oauth2-redirect"):
            assert client.get(path).status_code == 404


def test_docs_url_none_keeps_the_document() -> None:
    app = FastAPI(docs_url=None, redoc_url=None)
    with TestClient(app) as client:
        assert client.get("/openapi.json").status_code == 200
        assert client.get("/docs").status_code == 404
        assert client.get("/redoc").status_code == 404


def test_additional_responses_openapi_extra_and_dependency_params() -> None:
    app = FastAPI()

    def paging(limit: int = Query(10, ge=1, le=100), offset: int = 0) -> tuple[int, int]:
        return limit, offset

    from rawserve import Depends

    @app.get(
        "/things",
        responses={404: {"description": "No things"}, "5XX": {}},
        openapi_extra={"x-speed": "fast"},
        response_description="The things",
        operation_id="list_things",
    )
    def things(page: tuple[int, int] = Depends(paging)) -> list[str]:
        return []

    op = app.openapi()["paths"]["/things"]["get"]
    validate(app.openapi())
    assert op["operationId"] == "list_things"
    assert [p["name"] for p in op["parameters"]] == ["limit", "offset"]
    assert op["parameters"][0]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 10,
        "title": "Limit",
    }
    assert op["responses"]["200"]["description"] == "The things"
    assert op["responses"]["404"] == {"description": "No things"}
    assert op["responses"]["5XX"] == {"description": "Server Error"}
    assert op["x-speed"] == "fast"


def test_the_builtin_app_documents_predict_v2_and_health() -> None:
    from rawserve.inference.app import create_app

    document = create_app().openapi()
    validate(document)
    paths = document["paths"]
    for path, method in [
        ("/predict", "post"),
        ("/v2/models/{name}/infer", "post"),
        ("/v2/models/{name}", "get"),
        ("/v2/health/ready", "get"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    ]:
        assert method in paths[path], path
    predict = paths["/predict"]["post"]
    assert predict["tags"] == ["predict"]
    body = predict["requestBody"]["content"]
    assert set(body) == {"application/json", "multipart/form-data"}
    assert "file" in body["multipart/form-data"]["schema"]["properties"]
    infer = paths["/v2/models/{name}/infer"]["post"]
    assert infer["tags"] == ["v2"] and "inputs" in str(infer["requestBody"])
    assert {"404", "503"} <= set(infer["responses"])
    assert paths["/healthz"]["get"]["tags"] == ["health"]
    assert "/" not in paths  # the page is not part of the API


def test_router_tags_responses_and_deprecation_reach_the_operations() -> None:
    from rawserve import APIRouter

    router = APIRouter(prefix="/admin", tags=["admin"], responses={418: {"description": "Tea"}})

    @router.get("/stats")
    def stats() -> dict[str, int]:
        return {}

    app = FastAPI()
    app.include_router(router, deprecated=True, responses={403: {"description": "Forbidden"}})
    hidden = APIRouter(include_in_schema=False)

    @hidden.get("/secret")
    def secret() -> None:
        return None

    app.include_router(hidden)
    document = app.openapi()
    validate(document)
    assert list(document["paths"]) == ["/admin/stats"]
    op = document["paths"]["/admin/stats"]["get"]
    assert op["tags"] == ["admin"]
    assert op["deprecated"] is True
    assert set(op["responses"]) == {"200", "403", "418"}
