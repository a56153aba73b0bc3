"""Arbitrary bytes into the VOC XML parser and the image decoder: only the documented error
types come out — never another exception, a crash or a hang."""

from __future__ import annotations

import io

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from sppnet.data.decode import ImageDecodeError, decode_image
from sppnet.data.voc import AnnotationError, parse_voc_xml

FUZZ = settings(max_examples=150, deadline=2000,
                suppress_health_check=[HealthCheck.function_scoped_fixture])


def _png() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.arange(48, dtype=np.uint8).reshape(4, 4, 3)).save(buf, "PNG")
    return buf.getvalue()


VALID_XML = (b"<annotation><filename>a.jpg</filename><size><width>10</width><height>8</height>"
             b"</size><object><name>cat</name><difficult>0</difficult><bndbox><xmin>1</xmin>"
             b"<ymin>2</ymin><xmax>5</xmax><ymax>6</ymax></bndbox></object></annotation>")


def _mutations(seed: bytes):
    """Random bytes, and the seed file with bytes flipped, cut or spliced in."""
    edits = st.lists(st.tuples(st.integers(0, len(seed)), st.binary(max_size=8)), max_size=6)
    mutated = st.builds(lambda ed, cut: _apply(seed, ed)[:cut], edits,
                        st.integers(0, len(seed) + 50))
    return st.one_of(st.binary(max_size=400), mutated)


def _apply(data: bytes, edits) -> bytes:
    out = bytearray(data)
    for pos, chunk in edits:
        out[pos:pos + len(chunk)] = chunk
    return bytes(out)


@FUZZ
@given(_mutations(VALID_XML))
def test_voc_xml_parser_only_raises_annotation_error(tmp_path, data):
    f = tmp_path / "a.xml"
    f.write_bytes(data)
    try:
        raw = parse_voc_xml(f)
    except AnnotationError as e:
        assert str(f) in str(e)
        return
    for name, box, _ in raw["objects"]:
        assert isinstance(name, str) and len(box) == 4 and all(np.isfinite(box))
    assert all(isinstance(v, int) and v >= 0 for v in raw["size"])


@FUZZ
@given(_mutations(_png()))
def test_image_decoder_only_raises_image_decode_error(tmp_path, data):
    f = tmp_path / "a.png"
    f.write_bytes(data)
    try:
        arr = decode_image(f)
    except ImageDecodeError as e:
        assert str(f) in str(e)
        return
    assert arr.dtype == np.uint8 and arr.ndim == 3 and arr.shape[2] == 3
