"""PDF text for hosts that read no documents (gateway/frontends/documents.py)."""

from __future__ import annotations

import zlib

import pytest

from gateway.errors import InvalidRequest
from gateway.frontends.documents import pdf_text
from tests.support.pdf import pdf_with_text


def test_a_well_formed_pdf() -> None:
    assert pdf_text(pdf_with_text("Hello PDF"), "x") == "Hello PDF"


def test_a_pdf_without_its_cross_reference_table_is_still_read() -> None:
    damaged = pdf_with_text("No xref here").split(b"xref\n")[0]
    assert pdf_text(damaged, "x") == "No xref here"


def test_a_compressed_stream_in_a_damaged_pdf() -> None:
    body = zlib.compress(b"BT /F1 12 Tf 72 72 Td [(Hel) -20 (lo)] TJ ET")
    raw = (b"%PDF-1.4\n1 0 obj\n<< /Length " + str(len(body)).encode()
           + b" /Filter /FlateDecode >>\nstream\n" + body + b"\nendstream\nendobj\n")  # fmt: skip
    assert pdf_text(raw, "x") == "Hello"


@pytest.mark.parametrize("raw", [b"not a pdf", b"%PDF-1.4\n", b""])
def test_nothing_readable_is_a_400_naming_the_field(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as err:
        pdf_text(raw, "input[0].content[0].file_data")
    assert err.value.param == "input[0].content[0].file_data"
    assert err.value.code == "invalid_document"
