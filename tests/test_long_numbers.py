"""Numbers of thousands of digits from a client, over a real server: past
Python's 4300-digit int() limit they are a 422 (or ignored, for a port in
the Host header), never a 500. (The ``priority`` field is in
tests/test_priority.py, Inference-Header-Content-Length in
tests/test_inference_bad_input.py.)"""

from collections.abc import Iterator

import httpx
import pytest

from rawserve import RawServe, Request
from tests.conftest import RunningServer, run_server

HUGE = "9" * 5000

app = RawServe()


@app.get("/n/{n}")
async def path_int(n: int) -> dict[str, int]:
    return {"last": n % 10}


@app.get("/q")
async def query_int(n: int = 0) -> dict[str, int]:
    return {"last": n % 10}


@app.get("/port")
async def port(request: Request) -> dict[str, int | None]:
    return {"port": request.url.port}


@pytest.fixture(scope="module")
def srv() -> Iterator[RunningServer]:
    with run_server(app, tls=False) as s:
        yield s


@pytest.mark.parametrize("value", [HUGE, HUGE + ".0", "-" + HUGE, "-" + HUGE + ".000"])
def test_query_integer_of_thousands_of_digits_is_422(srv: RunningServer, value: str) -> None:
    r = httpx.get(f"{srv.http_url}/q", params={"n": value}, timeout=10)
    assert r.status_code == 422, r.text
    (error,) = r.json()["detail"]
    assert error["type"] == "int_parsing_size"
    assert error["msg"] == "Unable to parse input string as an integer, exceeded maximum size"
    assert error["loc"] == ["query", "n"]


def test_path_integer_of_thousands_of_digits_is_422(srv: RunningServer) -> None:
    r = httpx.get(f"{srv.http_url}/n/{HUGE}", timeout=10)
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"] == ["path", "n"]


def test_integers_within_the_limit_still_parse(srv: RunningServer) -> None:
    r = httpx.get(f"{srv.http_url}/q", params={"n": "9" * 4300}, timeout=10)
    assert r.status_code == 200 and r.json() == {"last": 9}
    r = httpx.get(f"{srv.http_url}/q", params={"n": "17.00"}, timeout=10)
    assert r.status_code == 200 and r.json() == {"last": 7}


@pytest.mark.parametrize(
    ("host", "port"), [(f"x:{HUGE}", None), ("x:8080", 8080), ("x:\xb2", None)]
)
def test_host_header_port_of_thousands_of_digits_is_no_port(
    srv: RunningServer, host: str, port: int | None
) -> None:
    # latin-1 on the wire: "\xb2" is a superscript two, which str.isdigit accepts.
    raw = host.encode("latin-1")
    r = httpx.get(f"{srv.http_url}/port", headers=[(b"host", raw)], timeout=10)
    assert r.status_code == 200, r.text
    assert r.json() == {"port": port}
