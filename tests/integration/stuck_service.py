"""The echo service with calls that ignore their cancellation, for the shutdown tests.

Sleep with seconds > 100 blocks in ``future.result()`` on a thread of a non-daemon pool (Python
waits for such threads at exit); Echo with text "spin" waits for a worker process that spins
(a model fit that never checks anything). Both write their pid or thread to a file the test reads.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import echo_pb2  # type: ignore[import-not-found]
import echo_pb2_grpc  # type: ignore[import-not-found]
import echo_service  # type: ignore[import-not-found]

from atelier.runtime.processes import ProcessPool
from atelier.runtime.server import Runtime, ServiceSpec


def spin(marker: str) -> int:
    Path(marker).write_text(str(os.getpid()))
    while True:
        pass


class StuckServicer(echo_service.EchoServicer):  # type: ignore[misc]
    def __init__(self, runtime: Runtime) -> None:
        super().__init__(runtime)
        self.threads = ThreadPoolExecutor(2, thread_name_prefix="stuck")
        self.processes = ProcessPool(1, name="stuck-fit")
        self.marker = Path(os.environ["STUCK_MARKER_DIR"])

    def Sleep(self, request: Any, context: Any) -> Any:
        if request.seconds <= 100:
            return super().Sleep(request, context)
        (self.marker / "thread").write_text("stuck")
        self.threads.submit(time.sleep, request.seconds).result()
        return echo_pb2.SleepResponse(slept_s=request.seconds)

    def Echo(self, request: Any, context: Any) -> Any:
        if request.text != "spin":
            return super().Echo(request, context)
        self.processes.submit(spin, str(self.marker / "spinner")).result()
        return echo_pb2.EchoResponse(text="never")


def build(runtime: Runtime) -> ServiceSpec:
    runtime.jobs()
    return ServiceSpec(
        name="echo",
        servicers=[(echo_pb2_grpc.add_EchoServiceServicer_to_server, StuckServicer(runtime))],
        service_names=[echo_service.SERVICE],
    )
