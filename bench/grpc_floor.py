"""The framework's floor for Recommend: a bare grpcio server (the same thread pool size as the
service, no interceptor, no engine) answering every Recommend with one fixed 12-item answer of
the service's usual size, plus the health service so the bench's readiness wait works.

The bench runs the same load generator against it as against the service
(`bench/recommendations_cpu.py serve --floor`): what gRPC Python itself costs on this machine,
side by side with the service, so a latency target can be told apart from the framework's floor.

    ATELIER_RECOMMENDATIONS_PORT=50099 .venv/bin/python bench/grpc_floor.py
"""

from __future__ import annotations

import os
import sys
from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "services"))

from atelier.recommendations.v1 import recommendations_pb2 as pb
from atelier.recommendations.v1 import recommendations_pb2_grpc as pb_grpc

ANSWER = pb.RecommendResponse(
    recommendations=[
        pb.Recommendation(
            item_id=f"i{10000 + k}",
            score=1.0 - k / 100,
            reason=f"shoppers who bought i{12000 + k} also bought it",
            category="tops",
            source="cobuy",
        )
        for k in range(12)
    ],
    model_version=1,
)


class Floor(pb_grpc.RecommendationsServiceServicer):
    def Recommend(self, request: pb.RecommendRequest, context: grpc.ServicerContext) -> pb.RecommendResponse:
        return ANSWER


def main() -> None:
    server = grpc.server(futures.ThreadPoolExecutor(int(os.environ.get("ATELIER_MAX_WORKERS", "8"))))
    pb_grpc.add_RecommendationsServiceServicer_to_server(Floor(), server)
    checks = health.HealthServicer()
    checks.set("", health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    server.add_insecure_port(f"127.0.0.1:{os.environ['ATELIER_RECOMMENDATIONS_PORT']}")
    server.start()
    server.wait_for_termination()


if __name__ == "__main__":
    main()
