"""Where the generation service keeps its models: one rule for the server, the CLI and the demo writer."""

from __future__ import annotations

from pathlib import Path

from atelier.runtime.config import ServiceConfig


def models_dir(config: ServiceConfig | None = None) -> Path:
    """``ATELIER_GENERATION_MODELS_DIR`` (or ``ATELIER_MODELS_DIR``), else ``<ATELIER_DATA_DIR>/models/generation``.

    ATELIER_DATA_DIR defaults to ``.atelier`` in the current folder, so the server, `atelier gen models`
    and the demo writer agree when run from the same folder or with the same ATELIER_DATA_DIR.
    """
    config = config or ServiceConfig.from_env("generation")
    return Path(config.setting("MODELS_DIR", str(config.data_dir / "models" / "generation"))).resolve()
