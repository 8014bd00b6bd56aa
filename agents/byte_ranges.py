"""HTTP byte ranges (RFC 9110 §14) for streamed files: what an <audio> element needs to seek.

Django's FileResponse sends whole files, and the packages that add ranges to it are
unmaintained; this is the small part we need: one range per request (a browser's media element
never asks for more; a multi-range request gets the whole file, which the RFC allows).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import IO

from django.http import HttpRequest, HttpResponse, StreamingHttpResponse

_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
CHUNK_BYTES = 64 * 1024


class Unsatisfiable(Exception):
    pass


def parse_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(first, last) byte, inclusive, of a single ``Range`` header; None: the whole file.

    Raises ``Unsatisfiable`` for a range that starts past the end (answered 416).
    """
    if not header:
        return None
    match = _RANGE.match(header.strip())
    if match is None:
        return None  # several ranges, or another unit: the whole file
    first, last = match.groups()
    if not first and not last:
        return None
    if not first:  # the last N bytes
        length = int(last)
        if length == 0:
            raise Unsatisfiable
        return max(size - length, 0), size - 1
    start = int(first)
    end = size - 1 if not last else min(int(last), size - 1)
    if start >= size or start > end:
        raise Unsatisfiable
    return start, end


def _chunks(handle: IO[bytes], start: int, length: int) -> Iterator[bytes]:
    try:
        handle.seek(start)
        while length > 0:
            chunk = handle.read(min(CHUNK_BYTES, length))
            if not chunk:
                break
            length -= len(chunk)
            yield chunk
    finally:
        handle.close()


def ranged_response(
    request: HttpRequest, handle: IO[bytes], *, size: int, content_type: str
) -> HttpResponse:
    """200 with the whole file, 206 with the requested range, or 416; ``handle`` is closed."""
    try:
        wanted = parse_range(request.headers.get("Range"), size)
    except Unsatisfiable:
        handle.close()
        response = HttpResponse(status=416)
        response["Content-Range"] = f"bytes */{size}"
        return response
    start, end = wanted if wanted is not None else (0, size - 1)
    length = max(end - start + 1, 0)
    response = StreamingHttpResponse(
        _chunks(handle, start, length), status=206 if wanted else 200, content_type=content_type
    )
    response["Content-Length"] = str(length)
    response["Accept-Ranges"] = "bytes"
    if wanted:
        response["Content-Range"] = f"bytes {start}-{end}/{size}"
    return response
