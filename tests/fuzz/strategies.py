"""Hypothesis strategies that draw protobuf requests from their descriptors: valid-shaped values
mixed with the malformed ones that broke the services before (NUL bytes, megabyte strings, 1e300,
NaN, page tokens of -1 and 20 digits, timestamps past year 9999, image bombs, broken files)."""

from __future__ import annotations

import io
import json
from functools import cache
from typing import Any

import numpy as np
from google.protobuf import descriptor, message, message_factory
from hypothesis import strategies as st
from PIL import Image

from tests.bombs import png_bomb

INT32 = (-(2**31), 2**31 - 1)
INT64 = (-(2**63), 2**63 - 1)
UINT32 = (0, 2**32 - 1)
UINT64 = (0, 2**64 - 1)


def _encode(img: Image.Image, fmt: str = "PNG", **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


@cache
def sample_images() -> tuple[bytes, ...]:
    """Real image bytes of every accepted layout, and the malformed ones."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (300, 280, 3), dtype=np.uint8)
    grey = rng.integers(0, 255, (64, 96), dtype=np.uint8)
    exif = Image.Exif()
    exif[0x0112] = 6
    good_png = _encode(Image.fromarray(rgb))
    return (
        good_png,
        _encode(Image.fromarray(grey)),
        _encode(Image.fromarray(np.dstack([grey, np.full_like(grey, 255)]), "LA")),
        _encode(Image.fromarray(grey.astype(np.uint16) * 257)),
        _encode(Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 128, np.uint8)]), "RGBA")),
        _encode(Image.fromarray(rgb), "JPEG", exif=exif.tobytes()),
        _encode(Image.fromarray(rgb), "WEBP"),
        _encode(Image.fromarray(grey), "TIFF"),
        _encode(Image.fromarray(grey).convert("P"), "PNG"),
        png_bomb(),  # 48 KB, 20000 x 20000 px
        _encode(Image.new("L", (8192, 8192)), optimize=True),
        _encode(Image.new("RGB", (2, 2))),
        _encode(Image.fromarray(np.zeros((16, 16), np.float32), "F"), "TIFF"),
        good_png[:200],
        good_png[:33] + bytes(64),
        b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n",
    )


def _mutate(data: bytes) -> st.SearchStrategy[bytes]:
    """Byte flips, truncation and splices of a real file."""

    def apply(ops: list[tuple[int, int]], cut: int) -> bytes:
        out = bytearray(data[: max(1, cut)] if cut else data)
        for position, value in ops:
            if out:
                out[position % len(out)] = value
        return bytes(out)

    return st.builds(
        apply,
        st.lists(st.tuples(st.integers(0, 2**31), st.integers(0, 255)), max_size=8),
        st.integers(0, len(data)),
    )


def images() -> st.SearchStrategy[bytes]:
    samples = sample_images()
    return st.one_of(st.sampled_from(samples), st.sampled_from(samples).flatmap(_mutate))


JSON_LEAVES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([1e300, -1e300, 0.0]),
    st.text(max_size=8),
)
json_values = st.recursive(
    JSON_LEAVES,
    lambda children: st.one_of(
        st.lists(children, max_size=4), st.dictionaries(st.text(max_size=6), children, max_size=4)
    ),
    max_leaves=20,
)


PIECE_KEYS = st.sampled_from(
    [
        "id",
        "outline",
        "quantity",
        "grain",
        "mirror",
        "size",
        "name",
        "rotation_step_deg",
        "allowed_orientations",
        "shape",
        "type",
        "data",
        "demand",
        "dxf",
    ]
)
pieces_like = st.recursive(
    JSON_LEAVES | st.just([[0, 0], [100, 0], [100, 50], [0, 50]]),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(PIECE_KEYS, children, max_size=5),
    ),
    max_leaves=25,
)


def pieces_json() -> st.SearchStrategy[bytes]:
    """Pieces files: the Atelier shape, the jagua-rs instance shape, anything JSON, and non-JSON."""
    atelier = st.builds(lambda ps, w: {"pieces": ps, "fabric_width_mm": w}, pieces_like, JSON_LEAVES)
    instance = st.builds(lambda items, h: {"items": items, "strip_height": h}, pieces_like, JSON_LEAVES)
    as_bytes = st.one_of(atelier, instance, json_values, pieces_like).map(lambda v: json.dumps(v).encode())
    return st.one_of(
        as_bytes,
        st.binary(max_size=64),
        st.sampled_from([b"[" * 100_000, b'{"pieces": [' * 5000, b'{"quantity": 1e400}', b"\xff\xfe{}"]),
    )


@cache
def sample_dxf() -> bytes:
    import ezdxf

    doc = ezdxf.new("R2010")
    doc.header["$INSUNITS"] = 4
    block = doc.blocks.new(name="FRONT-M")
    block.add_lwpolyline([(0, 0), (200, 0), (220, 300), (0, 310)], close=True, dxfattribs={"layer": "1"})
    block.add_text("Piece Name: FRONT", height=4, dxfattribs={"layer": "1"}).set_placement((50, 50))
    block.add_text("Quantity: 2", height=4, dxfattribs={"layer": "1"}).set_placement((50, 60))
    doc.modelspace().add_blockref("FRONT-M", (0, 0))
    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


def dxf_files() -> st.SearchStrategy[bytes]:
    data = sample_dxf()
    lines = data.split(b"\n")

    def replace_numbers(picks: list[tuple[int, bytes]]) -> bytes:
        out = list(lines)
        for index, value in picks:
            out[index % len(out)] = value
        return b"\n".join(out)

    weird = st.sampled_from([b"1e400", b"nan", b"-1e300", b"", b"abc", b"99999999999999999999", b"-1", b"0"])
    return st.one_of(
        st.builds(
            replace_numbers, st.lists(st.tuples(st.integers(0, len(lines)), weird), min_size=1, max_size=6)
        ),
        _mutate(data),
        st.binary(max_size=64),
    )


# -- protobuf requests from descriptors --------------------------------------------------------------

WEIRD_STRINGS = [
    "",
    "a\x00b",
    "x" * 5000,
    "-1",
    "99999999999999999999",
    "\u00b2",
    "kind=marker",
    "operations/nesting/0",
    "default",
    "tops",
    "M",
    "../../etc/passwd",
]
WEIRD_FLOATS = [
    0.0,
    1.0,
    -1.0,
    0.5,
    172.0,
    1500.0,
    1e12,
    1e13,
    1e300,
    -1e300,
    float("nan"),
    float("inf"),
    5e-324,
]
# Fields whose valid values would start long work; the fuzz keeps them small (or invalid).
SHORT_WORK = {
    "time_budget_s": st.sampled_from([1.0, -1.0, float("nan"), 1e300, 3601.0]),
    "steps": st.sampled_from([0, 1, 2, -1, 10**6]),
    "iterations": st.sampled_from([1, 2, -1, 10**6]),
    "horizon": st.sampled_from([0, 1, 4, -1, 105, 10**6]),
    "width_px": st.sampled_from([0, 64, -1, 10**6]),
    "height_px": st.sampled_from([0, 64, -1, 10**6]),
    "num_images": st.sampled_from([0, 1, -1, 10**6]),
}


def _bytes_for(field: descriptor.FieldDescriptor, path: str) -> st.SearchStrategy[bytes]:
    if field.name == "content":
        return st.one_of(pieces_json(), dxf_files())
    if field.name == "data" or "image" in path:
        return images()
    return st.one_of(st.binary(max_size=32), images())


def _scalar(field: descriptor.FieldDescriptor, path: str) -> st.SearchStrategy[Any]:
    if field.name in SHORT_WORK:
        return SHORT_WORK[field.name]
    t = field.type
    if t == field.TYPE_STRING:
        return st.one_of(st.text(max_size=12), st.sampled_from(WEIRD_STRINGS))
    if t == field.TYPE_BYTES:
        return _bytes_for(field, path)
    if t in (field.TYPE_DOUBLE, field.TYPE_FLOAT):
        floats = st.one_of(st.floats(), st.sampled_from(WEIRD_FLOATS))
        return floats if t == field.TYPE_DOUBLE else floats.map(lambda x: float(np.float32(x)))
    if t == field.TYPE_BOOL:
        return st.booleans()
    if t == field.TYPE_ENUM:
        known = [v.number for v in field.enum_type.values]
        return st.one_of(st.sampled_from(known), st.integers(*INT32))
    if t in (field.TYPE_INT32, field.TYPE_SINT32, field.TYPE_SFIXED32):
        bounds = INT32
    elif t in (field.TYPE_UINT32, field.TYPE_FIXED32):
        bounds = UINT32
    elif t in (field.TYPE_UINT64, field.TYPE_FIXED64):
        bounds = UINT64
    else:
        bounds = INT64
    small = st.sampled_from([v for v in (0, 1, 2, 3, 4, 10, 52, 100, -1) if bounds[0] <= v <= bounds[1]])
    return st.one_of(small, st.integers(*bounds))


def _timestamps() -> st.SearchStrategy[dict[str, int]]:
    plausible = st.builds(lambda k: {"seconds": 1_420_416_000 + 604_800 * k}, st.integers(-60, 300))
    return st.one_of(
        plausible,
        st.fixed_dictionaries({"seconds": st.integers(*INT64), "nanos": st.integers(*INT32)}),
        st.sampled_from([{"seconds": 2**62}, {"seconds": -(10**12)}, {"seconds": 253402214400}]),
    )


def message_dicts(
    desc: descriptor.Descriptor, depth: int = 0, path: str = ""
) -> st.SearchStrategy[dict[str, Any]]:
    """Field values for ``desc`` as a dict of strategies (each field present or not)."""
    if desc.full_name == "google.protobuf.Timestamp":
        return _timestamps()
    if desc.full_name == "google.protobuf.Duration":
        return st.fixed_dictionaries({"seconds": st.integers(-(10**6), 10**6)})
    if desc.full_name == "google.protobuf.Any" or depth > 4:
        return st.just({})
    optional: dict[str, st.SearchStrategy[Any]] = {}
    for field in desc.fields:
        sub = f"{path}.{field.name}"
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            key_f = field.message_type.fields_by_name["key"]
            value_f = field.message_type.fields_by_name["value"]
            values = (
                message_dicts(value_f.message_type, depth + 1, sub)
                if value_f.message_type is not None
                else _scalar(value_f, sub)
            )
            optional[field.name] = st.dictionaries(_scalar(key_f, sub), values, max_size=3)
            continue
        one = (
            message_dicts(field.message_type, depth + 1, sub)
            if field.message_type is not None
            else _scalar(field, sub)
        )
        if field.is_repeated:
            optional[field.name] = st.lists(one, max_size=4 if depth < 2 else 2)
        else:
            optional[field.name] = one
    return st.fixed_dictionaries({}, optional=optional)


def _fill(msg: message.Message, values: dict[str, Any]) -> None:
    for name, value in values.items():
        field = msg.DESCRIPTOR.fields_by_name[name]
        target = getattr(msg, name)
        try:
            if field.message_type is not None and field.message_type.GetOptions().map_entry:
                value_f = field.message_type.fields_by_name["value"]
                for key, item in value.items():
                    if value_f.message_type is not None:
                        _fill(target[key], item)
                    else:
                        target[key] = item
            elif field.message_type is not None:
                if field.is_repeated:
                    for item in value:
                        _fill(target.add(), item)
                else:
                    target.SetInParent()
                    _fill(target, value)
            elif field.is_repeated:
                target.extend(value)
            else:
                setattr(msg, name, value)
        except (ValueError, TypeError):
            pass  # a value this field cannot hold on the wire (e.g. a lone surrogate): leave it out


def requests(cls: type[message.Message]) -> st.SearchStrategy[message.Message]:
    def build(values: dict[str, Any]) -> message.Message:
        msg = cls()
        _fill(msg, values)
        return msg

    return message_dicts(cls.DESCRIPTOR).map(build)


def message_class(desc: descriptor.Descriptor) -> type[message.Message]:
    return message_factory.GetMessageClass(desc)
