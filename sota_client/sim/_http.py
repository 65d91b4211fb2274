"""HTTP/1.1 wire details: request bodies (bounded), Range headers, and writing responses.

Every response carries Content-Length, except 204/304 (which must not) and the deliberate
``Transfer-Encoding: chunked`` fault.
"""

from __future__ import annotations

import os
import re
import socket
from collections.abc import Iterator
from email.message import Message
from email.utils import formatdate
from http import HTTPStatus
from typing import BinaryIO, Final, Protocol

import msgspec

from ._errors import CoreError, Rejection

__all__ = [
    "UNSATISFIABLE",
    "BodyStream",
    "FileBody",
    "Request",
    "Response",
    "error_response",
    "format_head",
    "json_response",
    "media_type",
    "parse_range",
    "request_body_length",
    "send_response",
    "text_response",
    "too_big",
]

TEXT: Final = "text/plain; charset=UTF-8"
JSON: Final = "application/json"
OCTETS: Final = "application/octet-stream"
UNSATISFIABLE: Final = "unsatisfiable"

_RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)", re.IGNORECASE)
_HEX_RE = re.compile(rb"[0-9A-Fa-f]{1,15}")
_NO_BODY_STATUSES = frozenset({204, 304})
_READ_CHUNK = 1 << 20
_MAX_TRAILERS = 32


class Reader(Protocol):
    """The buffered socket reader a request body comes from."""

    def read(self, size: int, /) -> bytes: ...

    def readline(self, size: int, /) -> bytes: ...


class FileBody:
    """A byte range of an open file, sent with ``sendfile``; the response owns the file."""

    __slots__ = ("file", "length", "start")

    def __init__(self, fd: int, start: int, length: int) -> None:
        self.file: BinaryIO = open(fd, "rb", buffering=0, closefd=True)
        self.start = start
        self.length = length

    def pieces(self, size: int) -> Iterator[bytes]:
        """The range in pieces of at most ``size`` bytes (for chunked encoding)."""
        offset, end = self.start, self.start + self.length
        while offset < end:
            piece = os.pread(self.file.fileno(), min(size, end - offset), offset)
            if not piece:
                return
            offset += len(piece)
            yield piece


Body = bytes | memoryview | FileBody


class Response(msgspec.Struct):
    """A response to write; ``headers`` excludes the framing headers the writer adds."""

    status: int
    body: Body = b""
    content_type: str | None = None
    headers: list[tuple[str, str]] = msgspec.field(default_factory=list)

    def close(self) -> None:
        if isinstance(self.body, FileBody):
            self.body.file.close()

    @property
    def length(self) -> int:
        return self.body.length if isinstance(self.body, FileBody) else len(self.body)


class BodyStream:
    """A request body read piece by piece, for uploads too big to hold in memory."""

    def __init__(self, pieces: Iterator[bytes]) -> None:
        self._pieces = pieces
        self.exhausted = False

    def __iter__(self) -> Iterator[bytes]:
        yield from self._pieces
        self.exhausted = True


class Request(msgspec.Struct):
    """A parsed request as the route handlers see it."""

    method: str
    path: str
    query: str
    headers: Message
    params: dict[str, str] = msgspec.field(default_factory=dict)
    body: bytes = b""
    stream: BodyStream | None = None
    redirect: bool = False

    def media_type(self) -> str:
        return media_type(self.headers)


def media_type(headers: Message) -> str:
    """The Content-Type without parameters, lower-cased; empty when absent."""
    return (headers.get("Content-Type") or "").split(";")[0].strip().lower()


def too_big(length: int, limit: int) -> Rejection:
    return Rejection(413, f"request body of {length} bytes exceeds the limit of {limit}")


def text_response(status: int, text: str, headers: list[tuple[str, str]] | None = None) -> Response:
    return Response(status, text.encode(), TEXT, headers or [])


def json_response(status: int, value: object) -> Response:
    return Response(status, msgspec.json.encode(value), JSON)


def error_response(error: CoreError | Rejection) -> Response:
    if isinstance(error, CoreError):
        return json_response(error.status, {"code": error.code, "description": error.description})
    return text_response(error.status, error.text)


def request_body_length(headers: Message) -> int | None:
    """The declared body length; None for a chunked body.

    :raises Rejection: 400 for contradictory or invalid framing, 501 for other codings.
    """
    codings_headers = headers.get_all("Transfer-Encoding") or []
    lengths = headers.get_all("Content-Length") or []
    if codings_headers:
        if lengths:
            # Both at once is the classic request-smuggling shape: refuse it outright.
            raise Rejection(400, "Content-Length and Transfer-Encoding must not both be sent")
        codings = [c.strip().lower() for v in codings_headers for c in v.split(",") if c.strip()]
        if codings != ["chunked"]:
            raise Rejection(501, f"Transfer-Encoding {', '.join(codings)} is not supported")
        return None
    values = {v.strip() for v in lengths}
    if not values:
        return 0
    value = values.pop()
    if values or not value.isdigit() or not value.isascii():
        raise Rejection(400, f"invalid Content-Length: {', '.join(lengths)}")
    return int(value)


def read_body(rfile: Reader, length: int | None, limit: int) -> Iterator[bytes]:
    """Yield a request body's bytes, ``length`` of them or until the last chunk.

    :raises Rejection: 413 past ``limit``, 400 for broken chunked framing.
    :raises ConnectionError: the client closed the connection mid-body.
    """
    if length is not None:
        if length > limit:
            raise too_big(length, limit)
        yield from _read_exactly(rfile, length)
        return
    total = 0
    while True:
        line = rfile.readline(1024)
        if not line.endswith(b"\n"):
            raise _eof_or(line, "chunk size line too long or cut short")
        size_text = line.split(b";", 1)[0].strip()
        if not _HEX_RE.fullmatch(size_text):
            raise Rejection(400, f"invalid chunk size {size_text[:20]!r}")
        size = int(size_text, 16)
        if size == 0:
            break
        total += size
        if total > limit:
            raise Rejection(413, f"chunked request body exceeds the limit of {limit} bytes")
        yield from _read_exactly(rfile, size)
        if rfile.readline(3).strip():
            raise Rejection(400, "chunk data not followed by CRLF")
    for _ in range(_MAX_TRAILERS):
        line = rfile.readline(8192)
        if line in (b"\r\n", b"\n"):
            return
        if not line.endswith(b"\n"):
            raise _eof_or(line, "bad trailer line")
    raise Rejection(400, "too many trailer lines")


def _eof_or(line: bytes, problem: str) -> Exception:
    if not line:
        return ConnectionError("client closed the connection in the middle of the body")
    return Rejection(400, problem)


def _read_exactly(rfile: Reader, length: int) -> Iterator[bytes]:
    remaining = length
    while remaining:
        data = rfile.read(min(_READ_CHUNK, remaining))
        if not data:
            raise ConnectionError("client closed the connection in the middle of the body")
        remaining -= len(data)
        yield data


def parse_range(header: str | None, size: int) -> tuple[int, int] | str | None:
    """Interpret a Range header against a body of ``size`` bytes.

    :returns: ``(first, last)`` inclusive for one satisfiable range; :data:`UNSATISFIABLE`;
        or None to send the whole body (no header, an invalid one, another unit, or several
        ranges, which a server may answer in full).
    """
    if header is None:
        return None
    match = _RANGE_RE.fullmatch(header.strip())
    if match is None:
        return None
    first_text, last_text = match.groups()
    if not first_text:
        if not last_text:
            return None
        suffix = int(last_text)
        if suffix == 0 or size == 0:
            return UNSATISFIABLE
        return max(0, size - suffix), size - 1
    first = int(first_text)
    if last_text and int(last_text) < first:
        return None
    if first >= size:
        return UNSATISFIABLE
    last = min(int(last_text), size - 1) if last_text else size - 1
    return first, last


def format_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    """The status line and header block.

    :raises ValueError: a header name or value would break the framing (CR, LF).
    """
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"]
    for name, value in headers:
        if any(c in name or c in value for c in "\r\n\0"):
            raise ValueError(f"header {name!r} contains a line break")
        lines.append(f"{name}: {value}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def send_response(
    sock: socket.socket,
    response: Response,
    *,
    server: str,
    head_only: bool = False,
    chunk_size: int | None = None,
    truncate_at: int | None = None,
    close: bool = False,
) -> bool:
    """Write ``response``; return False if fewer body bytes went out than were announced.

    ``chunk_size`` switches to chunked encoding; ``truncate_at`` stops after that many body
    bytes (the caller then closes the connection).
    """
    try:
        headers = [("Server", server), ("Date", formatdate(usegmt=True))]
        has_body = response.status not in _NO_BODY_STATUSES
        if response.content_type and has_body:
            headers.append(("Content-Type", response.content_type))
        headers.extend(response.headers)
        chunked = chunk_size is not None and has_body
        if chunked:
            headers.append(("Transfer-Encoding", "chunked"))
        elif has_body:
            headers.append(("Content-Length", str(response.length)))
        if close:
            headers.append(("Connection", "close"))
        head = format_head(response.status, headers)
        if head_only or not has_body:
            sock.sendall(head)
            return True
        if chunked:
            assert chunk_size is not None
            sock.sendall(head)
            for piece in _pieces(response.body, chunk_size):
                sock.sendall(b"%x\r\n%b\r\n" % (len(piece), piece))
            sock.sendall(b"0\r\n\r\n")
            return True
        limit = response.length if truncate_at is None else min(truncate_at, response.length)
        return _send_body(sock, head, response.body, limit)
    finally:
        response.close()


def _pieces(body: Body, size: int) -> Iterator[bytes]:
    if isinstance(body, FileBody):
        yield from body.pieces(size)
        return
    view = memoryview(body)
    for offset in range(0, len(view), size):
        yield bytes(view[offset : offset + size])


def _send_body(sock: socket.socket, head: bytes, body: Body, limit: int) -> bool:
    if isinstance(body, FileBody):
        sock.sendall(head)
        if limit == 0:
            return True
        # Zero-copy from the page cache: the simulator must never be the bottleneck.
        sent = sock.sendfile(body.file, body.start, limit)
        return sent == limit
    view = memoryview(body)[:limit]
    if len(view) <= 65536:
        # One write for head and small body: no Nagle/delayed-ACK stall on keep-alive.
        sock.sendall(head + view)
    else:
        sock.sendall(head)
        sock.sendall(view)
    return True
