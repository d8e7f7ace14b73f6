"""Two tenants on the generation service (the rest: tests/integration/test_tenant_isolation.py).

Here rather than there because it uses this folder's tiny models (built once per session)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from atelier.generation.v1 import generation_pb2, generation_pb2_grpc
from atelier.runtime.server import Server
from tests.integration.test_tenant_isolation import DENIED, NOT_FOUND, Keys, covered, stubs


@pytest.fixture
def keys(tmp_path: Path) -> Keys:
    return Keys(tmp_path / "keys.json")


def test_generation_sessions_stay_with_their_tenant(
    start_server: Callable[..., Server], keys: Keys, monkeypatch: pytest.MonkeyPatch, models_dir: Path
) -> None:
    from atelier.generation.server import build

    pb = generation_pb2
    monkeypatch.setenv("ATELIER_GENERATION_MODELS_DIR", str(models_dir))
    monkeypatch.setenv("ATELIER_GENERATION_DEVICE", "cpu")
    server = start_server("generation", build, api_keys_file=str(keys.path))
    a, b, a_as_b, a_read = stubs(server, generation_pb2_grpc.GenerationServiceStub, keys)
    settings = pb.GenerationSettings(prompt="a paisley print", seed=7, steps=2)
    request = pb.GenerateRequest(model="tiny", settings=settings)
    assert a_read.code("Generate", request) == DENIED
    session = a("Generate", request)[-1].session_id
    assert session

    assert a_as_b.code("GetSession", pb.GetSessionRequest(session_id=session)) == DENIED
    assert b.code("GetSession", pb.GetSessionRequest(session_id=session)) == NOT_FOUND
    follow_up = pb.GenerateRequest(model="tiny", settings=settings, session_id=session)
    assert b.code("Generate", follow_up) == NOT_FOUND
    assert a("GetSession", pb.GetSessionRequest(session_id=session)).rounds == 1
    covered("atelier.generation.v1.GenerationService", b, pb.DESCRIPTOR)
