from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


@pytest.fixture(scope="session", autouse=True)
def echo_contract(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Compiles echo.proto and makes it importable here and in child processes."""
    from grpc_tools import protoc

    import protos.generate as generate

    out = tmp_path_factory.mktemp("echo_gen")
    include = generate._googleapis_include(out)
    well_known = Path(protoc.__file__).parent / "_proto"
    code = protoc.main(
        [
            "protoc",
            f"-I{HERE}",
            f"-I{include}",
            f"-I{well_known}",
            f"--python_out={out}",
            f"--grpc_python_out={out}",
            "echo.proto",
        ]
    )
    assert code == 0, "compiling tests/runtime/echo.proto failed"
    sys.path[:0] = [str(out), str(HERE)]
    old = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(out), str(HERE), old) if p)
    yield out
    os.environ["PYTHONPATH"] = old
