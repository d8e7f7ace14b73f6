"""Image bombs for the input-safety tests, built once per session."""

from __future__ import annotations

import io
from collections.abc import Callable
from functools import cache

from PIL import Image


@cache
def png_bomb(side: int = 20000) -> bytes:
    """A 1-bit PNG of side x side px: 48 KB for 20000 px, 1.2 GB once decoded as RGB."""
    buf = io.BytesIO()
    Image.new("1", (side, side)).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def peak_rss_growth_mb(call: Callable[[], object]) -> float:
    """How far this process's peak RSS (an in-process server's included) rises above the RSS
    before call() (Linux: writing 5 to /proc/self/clear_refs resets the peak, VmHWM)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kb("VmRSS")
    call()
    return (_status_kb("VmHWM") - before) / 1024
