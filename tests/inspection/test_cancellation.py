"""CreateProfile abandoned by its caller (deadline passed) stops training and commits nothing."""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc
import pytest

from atelier.inspection.server import build
from atelier.inspection.v1 import inspection_pb2 as pb
from atelier.inspection.v1 import inspection_pb2_grpc
from atelier.runtime.server import Server
from tests.inspection.test_service import image, png, weave


def test_create_profile_past_its_deadline_is_not_committed(start_server: Callable[..., Server]) -> None:
    server = start_server("inspection", build)
    stub = inspection_pb2_grpc.InspectionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))
    goods = [image(png(weave(128, 768, s))) for s in range(4)]
    request = pb.CreateProfileRequest(article="late-1", good_images=goods)
    started = time.monotonic()
    stub.CreateProfile(request, timeout=60)  # how long a full training takes here
    full_s = time.monotonic() - started

    with pytest.raises(grpc.RpcError) as late:
        stub.CreateProfile(pb.CreateProfileRequest(article="late-2", good_images=goods), timeout=full_s / 4)
    assert late.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    time.sleep(full_s * 1.5)  # had the training gone on, it would have saved by now
    with pytest.raises(grpc.RpcError) as missing:
        stub.GetProfile(pb.GetProfileRequest(article="late-2"), timeout=10)
    assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    folder = server.config.service_data_dir
    assert not list(folder.rglob("late-2/*.npz")), "the abandoned model file was left behind"
    assert server.admission.active == 0
    # The next call for that article is its first version.
    assert (
        stub.CreateProfile(pb.CreateProfileRequest(article="late-2", good_images=goods), timeout=60).version
        == 1
    )
