"""Image bombs for the input-safety tests, built once per session."""

from __future__ import annotations

import io
from functools import cache

from PIL import Image


@cache
def png_bomb(side: int = 20000) -> bytes:
    """A 1-bit PNG of side x side px: 48 KB for 20000 px, 1.2 GB once decoded as RGB."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()
