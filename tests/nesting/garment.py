"""A small garment for the nesting tests: asymmetric pieces (so mirroring shows), in mm."""

from __future__ import annotations

import math

import ezdxf

from atelier.nesting.servicer import to_polygon
from atelier.nesting.v1 import nesting_pb2 as pb

# An asymmetric front panel: a trapezoid with a notch (its mirror image differs from any rotation).
FRONT = ((0.0, 0.0), (220.0, 0.0), (200.0, 160.0), (60.0, 160.0), (40.0, 120.0), (0.0, 110.0))
SLEEVE = ((0.0, 0.0), (180.0, 0.0), (150.0, 90.0), (20.0, 70.0))
CUFF = ((0.0, 0.0), (120.0, 0.0), (120.0, 40.0), (0.0, 40.0))
POCKET = ((0.0, 0.0), (70.0, 0.0), (70.0, 60.0), (35.0, 80.0), (0.0, 60.0))


def signed_area(points: list[tuple[float, float]] | tuple[tuple[float, float], ...]) -> float:
    """Shoelace: rotations keep the sign, a reflection flips it."""
    return 0.5 * sum(
        x0 * y1 - x1 * y0 for (x0, y0), (x1, y1) in zip(points, [*points[1:], points[0]], strict=True)
    )


def outline(pl: pb.Placement) -> list[tuple[float, float]]:
    return [(p.x_mm, p.y_mm) for p in pl.outline.points]


def piece(
    id_: str,
    points: tuple[tuple[float, float], ...],
    quantity: int = 1,
    size: str = "",
    grain: int = pb.GRAIN_RULE_WOVEN,
    mirror: int = pb.MIRROR_RULE_NONE,
    step: float = 0.0,
) -> pb.Piece:
    return pb.Piece(
        id=id_,
        outline=to_polygon(points),
        quantity=quantity,
        size=size,
        grain=grain,
        mirror=mirror,
        rotation_step_deg=step,
    )


def shirt_dxf(sizes: dict[str, float], insunits: int = 4) -> bytes:
    """An AAMA-style DXF: one block per piece and size, boundary on layer 1, text annotations."""
    doc = ezdxf.new("R2010")
    doc.header["$INSUNITS"] = insunits
    msp = doc.modelspace()
    x = 0.0
    for size, scale in sizes.items():
        for name, shape, qty, mirror in (
            ("FRONT", FRONT, 1, "pair"),
            ("SLEEVE", SLEEVE, 1, "pair"),
            ("CUFF", CUFF, 2, "none"),
            ("POCKET", POCKET, 1, "none"),
        ):
            block = doc.blocks.new(name=f"{name}-{size}")
            pts = [(px * scale, py * scale) for px, py in shape]
            block.add_lwpolyline(pts, close=True, dxfattribs={"layer": "1"})
            # A drill hole inside the piece (layer 13 in AAMA) must not become the boundary.
            cx = sum(p[0] for p in pts) / len(pts)
            cy = sum(p[1] for p in pts) / len(pts)
            block.add_circle((cx, cy), 3.0, dxfattribs={"layer": "13"})
            block.add_line((10, 10), (10 + 50 * scale, 10), dxfattribs={"layer": "7"})  # grain line
            for i, text in enumerate(
                (
                    f"Piece Name: {name}",
                    f"Size: {size}",
                    f"Quantity: {qty}",
                    f"Mirror: {mirror}",
                    "Grain: woven",
                )
            ):
                block.add_text(text, height=4, dxfattribs={"layer": "1"}).set_placement((cx, cy + 6 * i))
            msp.add_blockref(f"{name}-{size}", (x, 0))
            x += 300 * scale
    import io

    stream = io.StringIO()
    doc.write(stream)
    return stream.getvalue().encode()


def ring(n: int, radius: float) -> tuple[tuple[float, float], ...]:
    return tuple(
        (radius * math.cos(2 * math.pi * i / n), radius * math.sin(2 * math.pi * i / n)) for i in range(n)
    )
