"""Every parser of callers' files, fed drawn and mutated inputs: each refuses bad input with its own
error type (which the servicers and the CLI turn into a message naming the problem), never another."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np
import pytest
import typer
from hypothesis import example, given
from hypothesis import strategies as st

from atelier.cli import trends as trends_cli
from atelier.nesting import formats
from atelier.runtime import images
from tests.fuzz.strategies import dxf_files, pieces_json
from tests.fuzz.strategies import images as image_bytes

LIMITS = images.ImageLimits(max_bytes=8 << 20, max_side_px=4096, max_pixels=16 << 20)


@given(data=image_bytes(), mode=st.sampled_from(images.OUTPUT_MODES))
def test_image_decoder_refuses_with_image_error_only(data: bytes, mode: str) -> None:
    try:
        out = images.decode(data, LIMITS, mode)
    except images.ImageError:
        return
    assert out.dtype == np.uint8 and out.ndim == (2 if mode == "L" else 3)
    assert max(out.shape[:2]) <= LIMITS.max_side_px


@given(content=pieces_json(), unit=st.sampled_from([0.0, 1.0, 10.0, 25.4]))
def test_pieces_json_refuses_with_import_error_only(content: bytes, unit: float) -> None:
    try:
        imported = formats.import_json(content, unit)
    except formats.ImportError_:
        return
    for piece in imported.pieces:
        assert np.isfinite(np.asarray(piece.outline_mm, float)).all()
        assert 1 <= piece.quantity <= formats.MAX_PLACED_PIECES


@given(content=dxf_files())
def test_dxf_refuses_with_the_errors_the_servicer_maps(content: bytes) -> None:
    # ImportPieces answers these INVALID_ARGUMENT on "content"; anything else fails the test.
    with contextlib.suppress(formats.ImportError_, KeyError, TypeError, ValueError):
        formats.import_dxf(content, 0.0)


CSV_CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "2015-01-05",
            "2015-01-05T00:00:00Z",
            "9999-12-31",
            "0001-01-01",
            "1e400",
            "nan",
            "-1",
            "",
            "a,b",
            '"',
        ]
    ),
)


@pytest.fixture(scope="module")
def csv_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("csv")


@example(header=["series", "time", "value"], rows=[[""]])  # found by the fuzz: a short row was a traceback
@given(
    header=st.lists(
        st.sampled_from(["series", "time", "timestamp", "value", "external", "colour", ""]), max_size=6
    ),
    rows=st.lists(st.lists(CSV_CELLS, max_size=7), max_size=6),
)
def test_trends_csv_readers_refuse_with_bad_parameter_only(
    csv_dir: Path, header: list[str], rows: list[list[str]]
) -> None:
    import csv

    path = csv_dir / "upload.csv"
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    for read in (trends_cli.read_long, lambda p: trends_cli.read_wide(p, None)):
        with contextlib.suppress(typer.BadParameter):
            read(path)
