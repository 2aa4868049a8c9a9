"""Form bodies: urlencoded and multipart parsing, files spooled to disk, the
limits on files, fields and part size, and malformed bodies answered 400."""

from __future__ import annotations

import os

import pytest

from rawserve.datastructures import UploadFile
from rawserve.exceptions import HTTPException
from rawserve.formparsers import MultiPartException
from tests.test_requests import encoded_form, make_request, split


async def test_urlencoded_form() -> None:
    request, _ = make_request(
        method="POST",
        headers=[(b"content-type", b"application/x-www-form-urlencoded")],
        body=b"name=J%C3%BCrgen&tag=a&tag=b&empty=",
    )
    form = await request.form()
    assert form["name"] == "Jürgen"
    assert form.getlist("tag") == ["a", "b"]
    assert form["empty"] == ""
    assert await request.form() is form


async def test_urlencoded_form_field_limit() -> None:
    request, _ = make_request(
        method="POST",
        headers=[(b"content-type", b"application/x-www-form-urlencoded; charset=utf-8")],
        body=b"&".join(b"f%d=1" % i for i in range(20)),
    )
    with pytest.raises(MultiPartException) as info:
        await request.form(max_fields=5)
    assert info.value.status_code == 400


@pytest.mark.parametrize("chunk_size", [1 << 20, 997, 7])
async def test_multipart_fields_and_files(chunk_size: int) -> None:
    body, ctype = encoded_form(
        data={"model": "digits", "note": "héllo"},
        files={
            "image": ("a.png", b"\x89PNG" + bytes(range(256)) * 4, "image/png"),
            "extra": ("b.txt", b"text file\r\n--not a boundary", "text/plain"),
        },
    )
    request, _ = make_request(
        method="POST", headers=[(b"content-type", ctype)], body=split(body, chunk_size)
    )
    form = await request.form()
    assert form["model"] == "digits"
    assert form["note"] == "héllo"
    image = form["image"]
    assert isinstance(image, UploadFile)
    assert image.filename == "a.png"
    assert image.content_type == "image/png"
    assert image.size == 4 + 1024
    assert await image.read() == b"\x89PNG" + bytes(range(256)) * 4
    extra = form["extra"]
    assert isinstance(extra, UploadFile)
    assert await extra.read() == b"text file\r\n--not a boundary"
    assert extra.headers["content-type"] == "text/plain"
    await request.close()
    assert image.file.closed and extra.file.closed


async def test_multipart_large_file_spools_to_disk() -> None:
    payload = os.urandom(1024 * 1024 + 4096)
    body, ctype = encoded_form(
        files={
            "big": ("big.bin", payload, "application/octet-stream"),
            "small": ("s.bin", b"tiny", "application/octet-stream"),
        }
    )
    request, _ = make_request(
        method="POST", headers=[(b"content-type", ctype)], body=split(body, 64 * 1024)
    )
    form = await request.form()
    big, small = form["big"], form["small"]
    assert isinstance(big, UploadFile) and isinstance(small, UploadFile)
    assert big.file._rolled  # type: ignore[attr-defined]
    assert not small.file._rolled  # type: ignore[attr-defined]
    assert big.size == len(payload)
    assert await big.read(10) == payload[:10]
    await big.seek(0)
    assert await big.read() == payload
    await form.close()
    assert big.file.closed


async def test_multipart_spool_threshold_is_configurable() -> None:
    body, ctype = encoded_form(files={"f": ("f", b"x" * 100, "application/octet-stream")})
    request, _ = make_request(method="POST", headers=[(b"content-type", ctype)], body=body)
    form = await request.form(spool_max_size=10)
    f = form["f"]
    assert isinstance(f, UploadFile)
    assert f.file._rolled  # type: ignore[attr-defined]
    assert await f.read() == b"x" * 100


@pytest.mark.parametrize(
    ("kwargs", "data", "files", "message"),
    [
        ({"max_files": 1}, None, {"a": ("a", b"1", "x/y"), "b": ("b", b"2", "x/y")}, "files"),
        ({"max_fields": 1}, {"a": "1", "b": "2"}, {"z": ("z", b"", "x/y")}, "fields"),
        ({"max_part_size": 10}, {"a": "x" * 11}, {"z": ("z", b"", "x/y")}, "maximum size"),
    ],
)
async def test_multipart_limits(
    kwargs: dict[str, int],
    data: dict[str, str] | None,
    files: dict[str, tuple[str, bytes, str]] | None,
    message: str,
) -> None:
    body, ctype = encoded_form(data=data, files=files)
    assert ctype.startswith(b"multipart/form-data")
    request, _ = make_request(method="POST", headers=[(b"content-type", ctype)], body=body)
    with pytest.raises(MultiPartException) as info:
        await request.form(**kwargs)
    assert message in info.value.detail
    assert isinstance(info.value, HTTPException)
    assert info.value.status_code == 400


async def test_multipart_missing_boundary() -> None:
    request, _ = make_request(
        method="POST", headers=[(b"content-type", b"multipart/form-data")], body=b"--x\r\n"
    )
    with pytest.raises(MultiPartException, match="boundary"):
        await request.form()


async def test_multipart_truncated_body() -> None:
    body, ctype = encoded_form(data={"a": "1"}, files={"f": ("f", b"data" * 100, "x/y")})
    request, _ = make_request(
        method="POST", headers=[(b"content-type", ctype)], body=body[: len(body) // 2]
    )
    with pytest.raises(MultiPartException, match="Incomplete"):
        await request.form()


async def test_multipart_garbage() -> None:
    request, _ = make_request(
        method="POST",
        headers=[(b"content-type", b"multipart/form-data; boundary=xyz")],
        body=b"this is not multipart at all",
    )
    with pytest.raises(MultiPartException):
        await request.form()


async def test_multipart_part_without_name() -> None:
    body = b"--xyz\r\nContent-Disposition: form-data\r\n\r\nvalue\r\n--xyz--\r\n"
    request, _ = make_request(
        method="POST",
        headers=[(b"content-type", b"multipart/form-data; boundary=xyz")],
        body=body,
    )
    with pytest.raises(MultiPartException, match="name"):
        await request.form()


async def test_multipart_by_hand_quoted_boundary_and_empty_file() -> None:
    body = (
        b"--a b\r\n"
        b'Content-Disposition: form-data; name="up"; filename=""\r\n'
        b"Content-Type: application/octet-stream\r\n\r\n"
        b"\r\n--a b\r\n"
        b'Content-Disposition: form-data; name="k"\r\n\r\n'
        b"v\r\n--a b--\r\n"
    )
    request, _ = make_request(
        method="POST",
        headers=[(b"content-type", b'multipart/form-data; boundary="a b"')],
        body=body,
    )
    form = await request.form()
    assert form["k"] == "v"
    up = form["up"]
    assert isinstance(up, UploadFile)
    assert up.filename == ""
    assert up.size == 0
    assert await up.read() == b""
