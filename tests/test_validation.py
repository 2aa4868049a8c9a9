"""Values checked and converted to the annotated types: the same results and
error shapes as pydantic, constraints, and the fallbacks without pydantic."""

# No ``from __future__ import annotations``: the cases below are real types.

import datetime
import decimal
import enum
import json
import subprocess
import sys
import uuid
from typing import Annotated, Any, Literal

import pytest

from rawserve.params import QueryParam as QueryInfo
from rawserve.validation.builder import _dataclass_validator, _iso_validator, build_validator
from rawserve.validation.constraints import constrain
from rawserve.validation.errors import Invalid
from tests.test_app import ROOT
from tests.test_params import INT_MSG, Color, Point

try:
    import pydantic
except ImportError:  # pragma: no cover - the venv installs it for the tests
    pydantic = None  # type: ignore[assignment]


# -- scalar validators agree with pydantic ------------------------------------------------


class Level(enum.IntEnum):
    low = 1
    high = 2


SCALAR_CASES: list[tuple[Any, Any]] = (
    [
        (int, v)
        for v in [
            "12",
            " 12 ",
            "1_000",
            "1.0",
            "1.5",
            "",
            "abc",
            "+3",
            "-3",
            "1e3",
            "٣",
            1.0,
            1.5,
            True,
            None,
        ]
    ]
    + [(float, v) for v in ["1.5", " 2 ", "inf", "nan", "1e3", "abc", "", True, 3, None]]
    + [
        (bool, v)
        for v in [
            "true",
            "True",
            "1",
            "0",
            "yes",
            "on",
            "off",
            "t",
            "f",
            "y",
            "n",
            "no",
            "2",
            "",
            1,
            2,
            0.0,
            [1],
        ]
    ]
    + [(str, v) for v in ["x", 1, None]]
    + [(bytes, v) for v in ["x", b"y", 1]]
    + [(Color, v) for v in ["red", "yellow", 1]]
    + [(Level, v) for v in ["1", 1, 3, "x"]]
    + [
        (uuid.UUID, v)
        for v in ["abc", "12345678-1234-5678-1234-567812345678", "12345678123456781234567812345678"]
    ]
    + [(decimal.Decimal, v) for v in ["1.5", "x", 2]]
    + [(Literal["a", "b"], v) for v in ["a", "c"]]
    + [(int | None, v) for v in ["x", "3", None]]
    + [(list[int], v) for v in [["1", "x", "y"], "abc", ["4"]]]
    + [(dict[str, int], v) for v in [{"a": "1"}, {"a": "x"}, [1]]]
    + [
        (tuple[int, ...], ["1", "2"]),
        (set[int], ["1", "1"]),
    ]
)


def _ours(tp: Any, value: Any) -> Any:
    try:
        return ("ok", build_validator(tp)(value))
    except Invalid as exc:
        return ("err", [dict(e, loc=tuple(e["loc"])) for e in exc.errors])


def _theirs(tp: Any, value: Any) -> Any:
    try:
        return ("ok", pydantic.TypeAdapter(tp).validate_python(value))
    except pydantic.ValidationError as exc:
        return ("err", [dict(e, loc=tuple(e["loc"])) for e in exc.errors(include_url=False)])


@pytest.mark.parametrize(("tp", "value"), SCALAR_CASES, ids=repr)
def test_scalar_validation_matches_pydantic(tp: Any, value: Any) -> None:
    ours, theirs = _ours(tp, value), _theirs(tp, value)
    if ours[0] == theirs[0] == "ok" and isinstance(theirs[1], float) and theirs[1] != theirs[1]:
        assert ours[1] != ours[1]  # nan
        return
    assert ours == theirs


CONSTRAINT_CASES: list[tuple[Any, dict[str, Any], Any]] = [
    (int, {"ge": 1}, "0"),
    (int, {"gt": 1}, "1"),
    (int, {"le": 1}, "5"),
    (int, {"lt": 1}, "1"),
    (float, {"ge": 1.5}, "0"),
    (int, {"multiple_of": 3}, "4"),
    (int, {"ge": 1, "le": 10}, "5"),
    (str, {"min_length": 1}, ""),
    (str, {"min_length": 2}, "a"),
    (str, {"max_length": 1}, "abc"),
    (str, {"max_length": 2}, "abc"),
    (str, {"pattern": "^a+$"}, "abc"),
    (str, {"pattern": "b"}, "abc"),
    (bytes, {"min_length": 2}, b"a"),
    (list[int], {"min_length": 1}, []),
    (list[int], {"max_length": 1}, [1, 2]),
]


@pytest.mark.parametrize(("tp", "kw", "value"), CONSTRAINT_CASES, ids=repr)
def test_constraints_match_pydantic(tp: Any, kw: dict[str, Any], value: Any) -> None:
    def ours() -> Any:
        try:
            return ("ok", constrain(build_validator(tp), QueryInfo(**kw))(value))
        except Invalid as exc:
            return ("err", [dict(e, loc=tuple(e["loc"])) for e in exc.errors])

    assert ours() == _theirs(Annotated[tp, pydantic.Field(**kw)], value)


# -- without pydantic ---------------------------------------------------------------------


def test_dataclass_validator_without_pydantic() -> None:
    v = _dataclass_validator(Point)
    assert v({"x": "1", "y": 2}) == Point(1, 2)
    with pytest.raises(Invalid) as info:
        v({"x": "a", "tags": [1]})
    assert info.value.errors == [
        {"type": "int_parsing", "loc": ("x",), "msg": INT_MSG, "input": "a"},
        {
            "type": "missing",
            "loc": ("y",),
            "msg": "Field required",
            "input": {"x": "a", "tags": [1]},
        },
        {
            "type": "string_type",
            "loc": ("tags", 0),
            "msg": "Input should be a valid string",
            "input": 1,
        },
    ]


def test_iso_dates_without_pydantic() -> None:
    v = _iso_validator(datetime.datetime)
    assert v("2024-05-01T10:00:00+00:00") == datetime.datetime(2024, 5, 1, 10, tzinfo=datetime.UTC)
    assert v(0) == datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    with pytest.raises(Invalid) as info:
        _iso_validator(datetime.date)("tomorrow")
    assert info.value.errors[0]["type"] == "date_parsing"
    assert info.value.errors[0]["loc"] == ()


def test_the_app_works_without_pydantic() -> None:
    # pydantic blocked: dataclass bodies, scalars and returns must still work.
    code = """
import sys, asyncio, json, datetime
sys.modules["pydantic"] = None
from dataclasses import dataclass
from rawserve import RawServe
from tests.test_app import call

@dataclass
class P:
    x: int
    y: int = 0

app = RawServe()

@app.post("/p")
async def p(body: P, when: datetime.date, q: int = 1) -> P:
    assert when == datetime.date(2024, 5, 1)
    return P(body.x * q, body.y)

async def main():
    ok = await call(app, "POST", "/p?q=2&when=2024-05-01", json_body={"x": "3"})
    bad = await call(app, "POST", "/p?when=2024-05-01", json_body={"x": "z"})
    print(json.dumps([ok.status, ok.json(), bad.status, bad.json()]))
    assert "pydantic" not in [m for m in sys.modules if sys.modules[m] is not None]

asyncio.run(main())
"""
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    status_ok, body_ok, status_bad, body_bad = json.loads(out.stdout)
    assert (status_ok, body_ok) == (200, {"x": 6, "y": 0})
    assert status_bad == 422
    assert body_bad["detail"][0]["loc"] == ["body", "x"]
