"""Every parser of callers' files, fed drawn and mutated inputs: each refuses bad input with its own
error type (which the servicers and the CLI turn into a message naming the problem), never another."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

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


# -- recommendations: the catalogue and events CSVs of `atelier recs load` --------------------------

RECS_CELLS = st.one_of(
    st.text(max_size=12),
    st.sampled_from(
        [
            "2024-03-01T12:00:00Z",
            "2024-03-01",
            "0001-01-01T00:00:00+05:00",
            "9999-12-31T23:59:59-05:00",
            "9999-12-31",
            "1.9999999999",
            "-0.0000000001",
            "1e19",
            "-1e300",
            "1e300",
            "1e400",
            "nan",
            "-3",
            "0",
            "purchase",
            "return",
            "view",
            "tops",
            "red|blue",
            "a\x00b",
            "x" * 200,
            "image.png",
            "/",
            "",
        ]
    ),
)
CATALOG_COLUMNS = [
    "item_id",
    "category",
    "price",
    "currency",
    "colours",
    "sizes",
    "image",
    "style",
    "fit",
    "",
]
EVENT_COLUMNS = [
    "event_id",
    "user_id",
    "item_id",
    "type",
    "time",
    "quantity",
    "value",
    "basket_id",
    "segment",
]


def _write_csv(path: Path, header: list[str], rows: list[list[str]], raw: bytes) -> None:
    import csv
    import io

    text = io.StringIO(newline="")
    writer = csv.writer(text)
    writer.writerow(header)
    writer.writerows(rows)
    path.write_bytes(text.getvalue().encode("utf-8", "surrogatepass") + raw)


# Cells by column, so that many drawn rows are valid but for one cell (random cells rarely are).
RECS_POOLS = {
    "item_id": ["a", "b", "x" * 200, ""],
    "event_id": ["e1", "e2", ""],
    "user_id": ["u", ""],
    "category": ["tops", ""],
    "type": ["purchase", "return", "view", "cart", "bogus"],
    "time": [
        "2024-03-01T12:00:00Z",
        "2024-03-01",
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-05:00",
        "0001-01-01",
        "yesterday",
    ],
    "image": ["image.png", "a\x00b", "/", "missing.png", ""],
}
NUMBERS = ["1.9999999999", "-0.0000000001", "1e19", "-1e300", "1e12", "-3", "0", "2.5", "", "1_000"]


@st.composite
def _recs_csv(draw: st.DrawFn, columns: list[str]) -> tuple[list[str], list[list[str]], bytes]:
    header = draw(
        st.one_of(
            st.just(columns[:5]), st.lists(st.sampled_from(columns), max_size=8), st.permutations(columns)
        )
    )
    by_column = st.lists(
        st.tuples(*[st.one_of(st.sampled_from(RECS_POOLS.get(c, NUMBERS)), RECS_CELLS) for c in header]).map(
            list
        ),
        max_size=6,
    )
    rows = draw(st.one_of(by_column, st.lists(st.lists(RECS_CELLS, max_size=9), max_size=6)))
    raw = draw(
        st.one_of(
            st.just(b""), st.binary(max_size=16), st.sampled_from([b'\n"unclosed', b"\xff\xfe", b"\x00"])
        )
    )
    return header, rows, raw


def _serialises(messages: list[Any]) -> None:
    for message in messages:
        message.SerializeToString()
        money = message.price if message.DESCRIPTOR.name == "Item" else message.value
        # A valid Money: |nanos| < 1e9, with the units' sign.
        assert abs(money.nanos) <= 999_999_999 and money.units * money.nanos >= 0, money


@example(
    table=(["item_id", "category", "price"], [["a", "tops", "1.9999999999"], ["b", "tops", "1e19"]], b"")
)
@example(table=(["item_id", "category", "image"], [["a", "tops", "a\x00b"]], b""))
@given(table=_recs_csv(CATALOG_COLUMNS))
def test_recs_catalog_csv_refuses_with_csv_error_or_row_problems_only(
    csv_dir: Path, table: tuple[list[str], list[list[str]], bytes]
) -> None:
    from atelier.cli import recommendations as recs_cli

    path = csv_dir / "catalog.csv"
    _write_csv(path, *table)
    (csv_dir / "image.png").write_bytes(b"\x89PNG not really")
    try:
        items, lines, _ = recs_cli.read_catalog(path)
    except recs_cli.CsvError:
        return
    assert len(items) == len(lines)
    _serialises(items)


@example(table=(EVENT_COLUMNS[:5], [["e", "u", "i", "view", "0001-01-01T00:00:00+05:00"]], b""))
@given(table=_recs_csv(EVENT_COLUMNS))
def test_recs_events_csv_refuses_with_csv_error_or_row_problems_only(
    csv_dir: Path, table: tuple[list[str], list[list[str]], bytes]
) -> None:
    from atelier.cli import recommendations as recs_cli

    path = csv_dir / "events.csv"
    _write_csv(path, *table)
    try:
        events, lines, _ = recs_cli.read_events(path)
    except recs_cli.CsvError:
        return
    assert len(events) == len(lines)
    _serialises(events)
    for event in events:
        assert event.quantity >= 0 and event.time.seconds >= -62135596800
