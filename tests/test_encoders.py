"""JSON encoding: numpy, dataclasses, stdlib value types, pydantic; and
jsonable_encoder with FastAPI's semantics."""

from __future__ import annotations

import dataclasses
import datetime
import enum
import json
import uuid
from collections import deque
from decimal import Decimal
from pathlib import PurePosixPath
from typing import Any

import numpy as np
import pydantic
import pytest

from rawserve.encoders import dumps, jsonable_encoder


class Color(enum.Enum):
    RED = "red"
    BLUE = 2


@dataclasses.dataclass
class Point:
    x: float
    y: float
    tags: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass
class Prediction:
    label: int
    scores: np.ndarray[tuple[int], np.dtype[np.float64]]
    price: Decimal
    at: datetime.datetime


class Item(pydantic.BaseModel):
    name: str
    price: Decimal
    when: datetime.date
    tags: set[str] = set()
    note: str | None = None
    alias_field: int = pydantic.Field(default=0, alias="aliasField")


def loads(data: bytes) -> Any:
    return json.loads(data)


# -- dumps ------------------------------------------------------------------------


def test_dumps_plain_values_compact_utf8() -> None:
    assert dumps({"a": [1, 2.5, None, True, "é"]}) == '{"a":[1,2.5,null,true,"é"]}'.encode()


def test_dumps_numpy_arrays_of_several_dtypes() -> None:
    assert loads(dumps(np.arange(6, dtype=np.int64).reshape(2, 3))) == [[0, 1, 2], [3, 4, 5]]
    assert loads(dumps(np.array([0.5, 1.5], dtype=np.float32))) == [0.5, 1.5]
    assert loads(dumps(np.array([True, False]))) == [True, False]
    assert loads(dumps(np.array([1, 2], dtype=np.uint8))) == [1, 2]
    assert loads(dumps(np.array([0.5], dtype=np.float16))) == [0.5]


def test_dumps_numpy_non_contiguous_and_object_arrays() -> None:
    a = np.arange(12, dtype=np.float64).reshape(3, 4)
    # orjson refuses non-contiguous arrays; the fallback must still encode them.
    assert loads(dumps(a[:, ::2])) == [[0.0, 2.0], [4.0, 6.0], [8.0, 10.0]]
    assert loads(dumps(a.T)) == a.T.tolist()
    assert loads(dumps(np.array(["a", "b"]))) == ["a", "b"]
    assert loads(dumps(np.array([1, "x"], dtype=object))) == [1, "x"]
    assert loads(dumps(np.zeros((0, 3)))) == []


def test_dumps_numpy_scalars() -> None:
    out = loads(
        dumps(
            {
                "i": np.int64(7),
                "f": np.float32(0.25),
                "b": np.bool_(True),
                "u": np.uint16(3),
                "h": np.float16(1.5),
                "argmax": np.argmax(np.array([0.1, 0.9])),
            }
        )
    )
    assert out == {"i": 7, "f": 0.25, "b": True, "u": 3, "h": 1.5, "argmax": 1}


def test_dumps_dataclass_with_numpy_and_decimal_fields() -> None:
    p = Prediction(
        label=3,
        scores=np.array([0.1, 0.9]),
        price=Decimal("1.50"),
        at=datetime.datetime(2024, 5, 1, 12, 0, tzinfo=datetime.UTC),
    )
    assert loads(dumps(p)) == {
        "label": 3,
        "scores": [0.1, 0.9],
        "price": 1.5,
        "at": "2024-05-01T12:00:00+00:00",
    }
    assert loads(dumps([Point(1, 2, ["a"])])) == [{"x": 1, "y": 2, "tags": ["a"]}]


def test_dumps_stdlib_types() -> None:
    u = uuid.UUID("12345678-1234-5678-1234-567812345678")
    out = loads(
        dumps(
            {
                "uuid": u,
                "date": datetime.date(2024, 1, 2),
                "dt": datetime.datetime(2024, 1, 2, 3, 4, 5, 6),
                "time": datetime.time(1, 2, 3),
                "delta": datetime.timedelta(minutes=1, microseconds=500000),
                "dec_int": Decimal("10"),
                "dec_frac": Decimal("0.125"),
                "enum": Color.RED,
                "enum2": Color.BLUE,
                "set": {1},
                "frozen": frozenset(["x"]),
                "deque": deque([1, 2]),
                "bytes": b"raw",
                "path": PurePosixPath("/a/b"),
                "tuple": (1, 2),
            }
        )
    )
    assert out == {
        "uuid": str(u),
        "date": "2024-01-02",
        "dt": "2024-01-02T03:04:05.000006",
        "time": "01:02:03",
        "delta": 60.5,
        "dec_int": 10,
        "dec_frac": 0.125,
        "enum": "red",
        "enum2": 2,
        "set": [1],
        "frozen": ["x"],
        "deque": [1, 2],
        "bytes": "raw",
        "path": "/a/b",
        "tuple": [1, 2],
    }


def test_dumps_non_str_keys() -> None:
    assert loads(dumps({1: "a", None: "b"})) == {"1": "a", "null": "b"}
    assert loads(dumps({Color.RED: 1})) == {"red": 1}


def test_dumps_pydantic_model() -> None:
    item = Item(name="n", price=Decimal("2.5"), when=datetime.date(2024, 1, 1), tags={"t"})
    assert loads(dumps({"item": item})) == {
        "item": {
            "name": "n",
            "price": "2.5",  # pydantic v2's own JSON mode
            "when": "2024-01-01",
            "tags": ["t"],
            "note": None,
            "alias_field": 0,
        }
    }


def test_dumps_unknown_type_is_a_clear_type_error() -> None:
    class Opaque:
        __slots__ = ()

    with pytest.raises(TypeError, match="Opaque"):
        dumps({"x": Opaque()})


def test_dumps_nan_becomes_null() -> None:
    assert loads(dumps([float("nan"), np.float64("inf")])) == [None, None]


# -- jsonable_encoder ---------------------------------------------------------------


def test_jsonable_encoder_primitives_unchanged() -> None:
    obj = {"a": [1, "s", 2.5, None, True]}
    assert jsonable_encoder(obj) == obj


def test_jsonable_encoder_matches_json_round_trip_of_dumps() -> None:
    value = {
        "p": Point(1.0, 2.0),
        "arr": np.arange(3),
        "scalar": np.float64(0.5),
        "when": datetime.datetime(2020, 1, 1),
        "id": uuid.UUID(int=1),
        "color": Color.BLUE,
        "dec": Decimal("3"),
        "set": {1},
        "tuple": (1, (2, 3)),
        "gen": (i for i in range(2)),
    }
    out = jsonable_encoder(value)
    assert out == {
        "p": {"x": 1.0, "y": 2.0, "tags": []},
        "arr": [0, 1, 2],
        "scalar": 0.5,
        "when": "2020-01-01T00:00:00",
        "id": "00000000-0000-0000-0000-000000000001",
        "color": 2,
        "dec": 3,
        "set": [1],
        "tuple": [1, [2, 3]],
        "gen": [0, 1],
    }
    assert json.loads(json.dumps(out)) == out


def test_jsonable_encoder_pydantic_options() -> None:
    item = Item(name="n", price=Decimal("1"), when=datetime.date(2024, 1, 1))
    assert jsonable_encoder(item, exclude_none=True, exclude={"tags"}) == {
        "name": "n",
        "price": "1",
        "when": "2024-01-01",
        "aliasField": 0,
    }
    assert "alias_field" in jsonable_encoder(item, by_alias=False)
    assert jsonable_encoder(item, include={"name"}) == {"name": "n"}
    assert jsonable_encoder(item, exclude_unset=True) == {
        "name": "n",
        "price": "1",
        "when": "2024-01-01",
    }


def test_jsonable_encoder_dict_options() -> None:
    d = {"a": 1, "b": None, "_sa_instance_state": "x"}
    assert jsonable_encoder(d) == {"a": 1, "b": None}
    assert jsonable_encoder(d, exclude_none=True) == {"a": 1}
    assert jsonable_encoder(d, include={"b"}) == {"b": None}
    assert jsonable_encoder(d, exclude={"a"}) == {"b": None}
    assert jsonable_encoder({"x": Point(1, 2)}, exclude_none=True) == {
        "x": {"x": 1, "y": 2, "tags": []}
    }


def test_jsonable_encoder_custom_encoder_and_plain_objects() -> None:
    class Money:
        def __init__(self, cents: int) -> None:
            self.cents = cents

    assert jsonable_encoder(Money(5)) == {"cents": 5}  # via vars(), as FastAPI does
    assert jsonable_encoder(Money(5), custom_encoder={Money: lambda m: m.cents / 100}) == 0.05

    class Opaque:
        __slots__ = ()

    with pytest.raises(ValueError, match="Opaque"):
        jsonable_encoder(Opaque())
