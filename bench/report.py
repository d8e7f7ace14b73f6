"""Writes one benchmark's section of BENCHMARKS.md, between its markers, leaving the rest."""

from __future__ import annotations

import platform
import re
import subprocess
from datetime import UTC, datetime
from pathlib import Path

from atelier.runtime.config import ServiceConfig

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "BENCHMARKS.md"


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}"


def commit() -> str:
    try:
        return subprocess.check_output(
            ["git", "rev-parse", "--short", "HEAD"], text=True, stderr=subprocess.DEVNULL
        ).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def bench_config(service: str, data_dir: Path) -> ServiceConfig:
    """An in-process server's config for a benchmark: free ports, SQLite in data_dir, quiet text logs."""
    return ServiceConfig(
        service=service,
        data_dir=data_dir,
        database_url=f"sqlite:///{data_dir / (service + '.db')}",
        log_format="text",
        log_level="WARNING",
    )


def write_section(name: str, body: str, command: str) -> None:
    """Replace the text between <!-- bench:NAME:start --> and <!-- bench:NAME:end -->."""
    stamp = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    block = (
        f"<!-- bench:{name}:start -->\n"
        f"Reproduce: `{command}` (run {stamp}, commit {commit()}, {machine()})\n\n"
        f"{body.strip()}\n<!-- bench:{name}:end -->"
    )
    text = BENCHMARKS_MD.read_text() if BENCHMARKS_MD.exists() else "# Benchmarks\n"
    pattern = re.compile(
        rf"<!-- bench:{re.escape(name)}:start -->.*?<!-- bench:{re.escape(name)}:end -->", re.S
    )
    if pattern.search(text):
        text = pattern.sub(lambda _m: block, text)
    else:
        text = text.rstrip() + f"\n\n## {name}\n\n{block}\n"
    BENCHMARKS_MD.write_text(text)
