"""Path templates: the regex, format and convertors ``compile_path`` makes of
one, and the templates it rejects."""

import pytest

from rawserve.convertors import IntegerConvertor, StringConvertor, compile_path


def test_compile_path_builds_regex_format_and_convertors() -> None:
    regex, fmt, convs = compile_path("/users/{user_id:int}/files/{rest:path}")
    assert fmt == "/users/{user_id}/files/{rest}"
    assert isinstance(convs["user_id"], IntegerConvertor)
    m = regex.match("/users/12/files/a/b.txt")
    assert m is not None and m.groupdict() == {"user_id": "12", "rest": "a/b.txt"}
    assert regex.match("/users/x/files/a") is None

    regex, fmt, convs = compile_path("/items/{name}")
    assert isinstance(convs["name"], StringConvertor)
    assert regex.match("/items/a/b") is None
    assert regex.match("/items/") is None


def test_compile_path_escapes_literal_text() -> None:
    regex, _, _ = compile_path("/v1.0/a+b")
    assert regex.match("/v1.0/a+b")
    assert regex.match("/v1x0/aab") is None


def test_compile_path_rejects_bad_templates() -> None:
    with pytest.raises(ValueError, match="duplicated"):
        compile_path("/{a}/{a}")
    with pytest.raises(ValueError, match="unknown path convertor"):
        compile_path("/{a:nope}")
