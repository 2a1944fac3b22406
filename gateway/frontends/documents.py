"""The text of a PDF a client sends, for hosts that read no documents.

No GLM-4 variant served here takes a PDF; its text does. Extraction is bounded (pages, characters)
and runs on bodies already held to ``limits``; a PDF that yields no text (a scan) or cannot be
read is a clear 400 for the caller to turn into text another way.
"""

from __future__ import annotations

import io
import logging
import re
import zlib
from typing import Final

from gateway.errors import InvalidRequest

MAX_PAGES: Final = 200
MAX_CHARS: Final = 400_000


def pdf_text(data: bytes, param: str) -> str:
    """The text of the PDF ``data`` (at most :data:`MAX_PAGES` pages and :data:`MAX_CHARS`
    characters); :class:`~gateway.errors.InvalidRequest` naming ``param`` when there is none."""
    from pypdf import PdfReader  # imported on the first PDF only
    from pypdf.errors import PyPdfError

    logging.getLogger("pypdf").setLevel(logging.ERROR)  # its warnings are about the file
    try:
        reader = PdfReader(io.BytesIO(data))
        pages: list[str] = []
        size = 0
        for page in reader.pages[:MAX_PAGES]:
            text = page.extract_text() or ""
            pages.append(text)
            size += len(text)
            if size >= MAX_CHARS:
                break
    except (PyPdfError, ValueError, KeyError, TypeError, OSError) as exc:
        pages = [_scan_text(data)]  # a damaged file (no xref...): its text operators, read raw
        if not pages[0]:
            raise InvalidRequest(
                f"{param}: the PDF could not be read ({type(exc).__name__}).",
                param=param,
                code="invalid_document",
            ) from None
    text = "\n\n".join(p.strip() for p in pages if p.strip())[:MAX_CHARS]
    if not text:
        raise InvalidRequest(
            f"{param}: the PDF has no text layer (a scan?); no GLM variant served here reads "
            "images of pages as documents: send its text or page images.",
            param=param,
            code="invalid_document",
        )
    return text


_STREAM = re.compile(rb"<<(.*?)>>\s*stream\r?\n(.*?)\r?\nendstream", re.S)
_SHOWN = re.compile(rb"\((?:[^()\\]|\\.)*\)\s*Tj|\[(?:[^\]\\]|\\.)*\]\s*TJ", re.S)
_LITERAL = re.compile(rb"\(((?:[^()\\]|\\.)*)\)", re.S)
_ESCAPES = {b"n": b"\n", b"r": b"\r", b"t": b"\t", b"(": b"(", b")": b")", b"\\": b"\\"}


def _scan_text(data: bytes) -> str:
    """The text a damaged PDF's content streams show (``Tj`` / ``TJ`` literal strings), for a
    file whose cross-reference table pypdf cannot find; empty when there is none."""
    lines: list[str] = []
    size = 0
    for head, body in _STREAM.findall(data[: 50 * 1024 * 1024]):
        if b"FlateDecode" in head:
            try:
                body = zlib.decompressobj().decompress(body, MAX_CHARS * 4)
            except zlib.error:
                continue
        for shown in _SHOWN.findall(body):
            line = b"".join(_unescape(s) for s in _LITERAL.findall(shown))
            lines.append(line.decode("latin-1"))
            size += len(line)
            if size >= MAX_CHARS:
                return "\n".join(lines)
    return "\n".join(lines)


def _unescape(literal: bytes) -> bytes:
    return re.sub(rb"\\(.)", lambda m: _ESCAPES.get(m.group(1), m.group(1)), literal)
