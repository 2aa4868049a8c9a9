"""Form bodies: ``application/x-www-form-urlencoded`` and ``multipart/form-data``
parsed into ``FormData``, files spooled as they arrive (starlette's formparsers.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl

import python_multipart as _multipart

from rawserve.datastructures import FormData, Headers, UploadFile
from rawserve.exceptions import HTTPException

__all__ = ["MultiPartException", "parse_multipart", "parse_urlencoded"]


class MultiPartException(HTTPException):
    """A form body that cannot be parsed or breaks a limit: answered 400 with
    the reason as ``detail``."""

    def __init__(self, message: str) -> None:
        super().__init__(400, detail=message)
        self.message = message


def parse_urlencoded(body: bytes, *, max_fields: int) -> FormData:
    try:
        pairs = parse_qsl(
            body.decode("latin-1"),
            keep_blank_values=True,
            max_num_fields=max_fields,
            encoding="utf-8",
            errors="replace",
        )
    except ValueError:
        raise MultiPartException(
            f"Too many fields. Maximum number of fields is {max_fields}."
        ) from None
    return FormData(pairs)


class _MultiPartCollector:
    """Receives python-multipart's callbacks and turns them into form items.
    File data is queued as it is parsed and written (possibly off-loop) between
    feeds, so the parser itself stays synchronous."""

    def __init__(
        self, *, max_files: int, max_fields: int, max_part_size: int, spool_max_size: int
    ) -> None:
        self.max_files = max_files
        self.max_fields = max_fields
        self.max_part_size = max_part_size
        self.spool_max_size = spool_max_size
        self.items: list[tuple[str, str | UploadFile]] = []
        self.files = 0
        self.fields = 0
        self.ended = False
        # Per part.
        self._header_field = b""
        self._header_value = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._name = ""
        self._file: UploadFile | None = None
        self._data = bytearray()
        # (file, data) writes waiting for the async side; data None marks the part end.
        self.pending: list[tuple[UploadFile, bytes | None]] = []

    def callbacks(self) -> Any:
        return {
            "on_part_begin": self.on_part_begin,
            "on_part_data": self.on_part_data,
            "on_part_end": self.on_part_end,
            "on_header_field": self.on_header_field,
            "on_header_value": self.on_header_value,
            "on_header_end": self.on_header_end,
            "on_headers_finished": self.on_headers_finished,
            "on_end": self.on_end,
        }

    def on_part_begin(self) -> None:
        self._headers = []
        self._data = bytearray()
        self._file = None

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_field += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        self._headers.append((self._header_field.lower(), self._header_value))
        self._header_field = b""
        self._header_value = b""

    def on_headers_finished(self) -> None:
        disposition = b""
        for name, value in self._headers:
            if name == b"content-disposition":
                disposition = value
        _, options = _multipart.multipart.parse_options_header(disposition)
        raw_name = options.get(b"name")
        if raw_name is None:
            raise MultiPartException(
                'The Content-Disposition header field "name" must be provided.'
            )
        self._name = raw_name.decode("utf-8", "replace")
        raw_filename = options.get(b"filename")
        if raw_filename is not None:
            self.files += 1
            if self.files > self.max_files:
                raise MultiPartException(
                    f"Too many files. Maximum number of files is {self.max_files}."
                )
            self._file = UploadFile(
                filename=raw_filename.decode("utf-8", "replace"),
                size=0,
                headers=Headers(raw=self._headers),
                max_size=self.spool_max_size,
            )
        else:
            self.fields += 1
            if self.fields > self.max_fields:
                raise MultiPartException(
                    f"Too many fields. Maximum number of fields is {self.max_fields}."
                )
            self._file = None

    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        if self._file is not None:
            self.pending.append((self._file, data[start:end]))
            return
        if len(self._data) + (end - start) > self.max_part_size:
            raise MultiPartException(f"Part exceeded maximum size of {self.max_part_size} bytes.")
        self._data += data[start:end]

    def on_part_end(self) -> None:
        if self._file is not None:
            self.items.append((self._name, self._file))
            self.pending.append((self._file, None))
        else:
            self.items.append((self._name, self._data.decode("utf-8", "replace")))

    def on_end(self) -> None:
        self.ended = True


async def parse_multipart(
    content_type: str,
    chunks: AsyncIterator[bytes],
    *,
    max_files: int,
    max_fields: int,
    max_part_size: int,
    spool_max_size: int,
) -> FormData:
    _, params = _multipart.multipart.parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise MultiPartException("Missing boundary in multipart.")
    collector = _MultiPartCollector(
        max_files=max_files,
        max_fields=max_fields,
        max_part_size=max_part_size,
        spool_max_size=spool_max_size,
    )
    try:
        parser = _multipart.MultipartParser(boundary, collector.callbacks())
        async for chunk in chunks:
            parser.write(chunk)
            for upload, data in collector.pending:
                if data is None:
                    await upload.seek(0)
                else:
                    await upload.write(data)
            collector.pending.clear()
        parser.finalize()
        if not collector.ended:
            raise MultiPartException("Incomplete multipart body: the closing boundary is missing.")
    except BaseException as exc:
        for _, value in collector.items:
            if isinstance(value, UploadFile):
                await value.close()
        if collector._file is not None:
            await collector._file.close()
        if isinstance(exc, _multipart.exceptions.FormParserError) and not isinstance(
            exc, MultiPartException
        ):
            raise MultiPartException(str(exc)) from None
        raise
    return FormData(collector.items)
