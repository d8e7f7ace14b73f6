"""The services of the platform, in start order, with their localhost ports."""

from __future__ import annotations

from atelier.runtime.config import DEFAULT_PORTS

SERVICES: tuple[str, ...] = tuple(DEFAULT_PORTS)

# The gRPC service each one serves (its contract in protos/atelier/<name>/v1/).
GRPC_SERVICES: dict[str, str] = {
    "generation": "atelier.generation.v1.GenerationService",
    "body": "atelier.body.v1.BodyService",
    "nesting": "atelier.nesting.v1.NestingService",
    "inspection": "atelier.inspection.v1.InspectionService",
    "trends": "atelier.trends.v1.TrendsService",
    "recommendations": "atelier.recommendations.v1.RecommendationsService",
}
