"""Who may call what, for which tenant: the key store, the role each RPC needs, and the checks a
server makes before it starts (settings that fail closed). No gRPC here; the interceptor calls
:meth:`Authoriser.admit` for every RPC.

Per call: the key (``authorization: Bearer <key>`` or ``x-api-key``) must be known and not
revoked (UNAUTHENTICATED otherwise); ``x-atelier-tenant`` may only name a tenant the key grants
(PERMISSION_DENIED otherwise; without the header a key of one tenant works for that tenant); the
key's role must reach the RPC's (PERMISSION_DENIED). Objects of other tenants are then invisible
because every store query filters on the caller's tenant: they answer NOT_FOUND, never "denied".
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atelier.runtime.config import ServiceConfig
from atelier.runtime.errors import (
    InvalidArgumentError,
    PermissionDeniedError,
    UnauthenticatedError,
)
from atelier.runtime.keys import TENANT_RE, FileKeyStore, KeyStore, KeyStoreError, Principal, Role

log = logging.getLogger("atelier.auth")

TENANT_HEADER = "x-atelier-tenant"
HEALTH_SERVICE = "grpc.health.v1.Health"
REFLECTION_SERVICES = frozenset(
    {"grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection"}
)
REFLECTION_MODES = ("open", "key", "off")

_R, _W, _A = Role.READ, Role.WRITE, Role.ADMIN
# The role each RPC needs: read = reads and pure computations, write = stores or changes data or
# starts a job, admin = deletes stored data. An RPC missing here needs write (fail closed);
# tests/runtime/test_auth.py checks that every RPC of every contract is listed.
METHOD_ROLES: dict[str, Role] = {
    "grpc.health.v1.Health/Check": _R,
    "grpc.health.v1.Health/Watch": _R,
    "grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo": _R,
    "grpc.reflection.v1.ServerReflection/ServerReflectionInfo": _R,
    "google.longrunning.Operations/GetOperation": _R,
    "google.longrunning.Operations/ListOperations": _R,
    "google.longrunning.Operations/WaitOperation": _R,
    "google.longrunning.Operations/CancelOperation": _W,
    "google.longrunning.Operations/DeleteOperation": _A,
    "atelier.body.v1.BodyService/MeasureBody": _R,
    "atelier.body.v1.BodyService/PredictMeasurements": _R,
    "atelier.body.v1.BodyService/CreateSizeChart": _W,
    "atelier.body.v1.BodyService/GetSizeChart": _R,
    "atelier.body.v1.BodyService/ListSizeCharts": _R,
    "atelier.body.v1.BodyService/UpdateSizeChart": _W,
    "atelier.body.v1.BodyService/DeleteSizeChart": _A,
    "atelier.body.v1.BodyService/RecommendSize": _R,
    "atelier.body.v1.BodyService/CreateSizeGrid": _R,  # computes a grid, stores nothing
    "atelier.generation.v1.GenerationService/ListModels": _R,
    "atelier.generation.v1.GenerationService/Generate": _W,  # stores the session's round
    "atelier.generation.v1.GenerationService/MakeTileable": _R,
    "atelier.generation.v1.GenerationService/GetSession": _R,
    "atelier.inspection.v1.InspectionService/CreateProfile": _W,
    "atelier.inspection.v1.InspectionService/GetProfile": _R,
    "atelier.inspection.v1.InspectionService/ListProfiles": _R,
    "atelier.inspection.v1.InspectionService/InspectImage": _R,
    "atelier.inspection.v1.InspectionService/InspectStream": _R,
    "atelier.inspection.v1.InspectionService/GradeRoll": _R,
    "atelier.nesting.v1.NestingService/CreateMarker": _W,
    "atelier.nesting.v1.NestingService/WatchMarker": _R,
    "atelier.nesting.v1.NestingService/GetMarker": _R,
    # ImportPieces may store the pattern (save_pattern): a write.
    "atelier.nesting.v1.NestingService/ImportPieces": _W,
    "atelier.nesting.v1.NestingService/ExportMarker": _R,
    "atelier.nesting.v1.NestingService/ImportMarker": _R,
    "atelier.nesting.v1.NestingService/ListPatterns": _R,
    "atelier.nesting.v1.NestingService/GetPattern": _R,
    "atelier.nesting.v1.NestingService/DeletePattern": _A,
    "atelier.recommendations.v1.RecommendationsService/UpsertItems": _W,
    "atelier.recommendations.v1.RecommendationsService/GetItem": _R,
    "atelier.recommendations.v1.RecommendationsService/RecordEvents": _W,
    "atelier.recommendations.v1.RecommendationsService/StreamEvents": _W,
    "atelier.recommendations.v1.RecommendationsService/TrainModel": _W,
    "atelier.recommendations.v1.RecommendationsService/ListModelVersions": _R,
    "atelier.recommendations.v1.RecommendationsService/EvaluateModel": _W,
    "atelier.recommendations.v1.RecommendationsService/GetSettings": _R,
    "atelier.recommendations.v1.RecommendationsService/UpdateSettings": _A,
    "atelier.recommendations.v1.RecommendationsService/Recommend": _R,
    "atelier.recommendations.v1.RecommendationsService/SimilarItems": _R,
    "atelier.recommendations.v1.RecommendationsService/CompleteTheLook": _R,
    "atelier.trends.v1.TrendsService/IngestObservations": _W,
    "atelier.trends.v1.TrendsService/StreamObservations": _W,
    "atelier.trends.v1.TrendsService/IngestSales": _W,
    "atelier.trends.v1.TrendsService/ListSeries": _R,
    "atelier.trends.v1.TrendsService/GetSeries": _R,
    "atelier.trends.v1.TrendsService/Forecast": _R,
    "atelier.trends.v1.TrendsService/StartForecast": _W,
    "atelier.trends.v1.TrendsService/ClassifyTrends": _R,
    "atelier.trends.v1.TrendsService/ForecastDemand": _R,
    "atelier.trends.v1.TrendsService/Backtest": _R,
    "atelier.trends.v1.TrendsService/ForecastNewProducts": _R,
}


def required_role(grpc_service: str, grpc_method: str) -> Role:
    return METHOD_ROLES.get(f"{grpc_service}/{grpc_method}", Role.WRITE)


def presented_key(metadata: Mapping[str, Any]) -> str:
    bearer = str(metadata.get("authorization") or "")
    if bearer.lower().startswith("bearer "):
        return bearer[7:].strip()
    return str(metadata.get("x-api-key") or "").strip()


@dataclass(frozen=True)
class Access:
    """The outcome of admitting one call: the tenant it acts for and the key (None: no auth)."""

    tenant: str
    principal: Principal | None = None


class Authoriser:
    def __init__(self, keys: KeyStore | None, default_tenant: str, reflection: str = "open") -> None:
        self.keys = keys
        self.default_tenant = default_tenant
        self.reflection = reflection

    def is_open(self, grpc_service: str) -> bool:
        """Reachable without a key: health always (probes), reflection when ATELIER_REFLECTION=open."""
        if grpc_service == HEALTH_SERVICE:
            return True
        return grpc_service in REFLECTION_SERVICES and self.reflection == "open"

    def admit(
        self, grpc_service: str, grpc_method: str, metadata: Mapping[str, Any], role: Role | None = None
    ) -> Access:
        """The call's tenant and key, or an error (authentication first: a caller without a key
        learns nothing from the other checks). ``role`` overrides METHOD_ROLES for calls that are
        not gRPC methods (generation's HTTP routes)."""
        requested = str(metadata.get(TENANT_HEADER) or "")
        if self.keys is None or self.is_open(grpc_service):
            tenant = requested or self.default_tenant
            _check_tenant_format(tenant)
            return Access(tenant)
        key = presented_key(metadata)
        principal = self.keys.authenticate(key) if key else None
        if principal is None:
            raise UnauthenticatedError(
                "missing, unknown or revoked API key: send 'authorization: Bearer <key>' metadata"
            )
        if requested:
            _check_tenant_format(requested)
            if requested not in principal.tenants:
                raise PermissionDeniedError(
                    f"key {principal.key_id} does not grant tenant {requested!r} "
                    f"(it grants {', '.join(principal.tenants)})"
                )
            tenant = requested
        elif len(principal.tenants) == 1:
            tenant = principal.tenants[0]
        elif self.default_tenant in principal.tenants:
            tenant = self.default_tenant
        else:
            raise InvalidArgumentError.for_field(
                f"metadata {TENANT_HEADER}",
                f"required: key {principal.key_id} grants several tenants ({', '.join(principal.tenants)})",
            )
        needed = role if role is not None else required_role(grpc_service, grpc_method)
        if principal.role < needed:
            what = f"{grpc_service}/{grpc_method}" if grpc_method else "this call"
            raise PermissionDeniedError(
                f"{what} needs a {needed.label} key; key {principal.key_id} is {principal.role.label}"
            )
        return Access(tenant, principal)


def _check_tenant_format(tenant: str) -> None:
    if not TENANT_RE.match(tenant):
        raise InvalidArgumentError.for_field(
            f"metadata {TENANT_HEADER}",
            "must be 1-63 characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit",
        )


# -- settings that fail closed --------------------------------------------------------------------


class InsecureConfigError(ValueError):
    """The server must not start with these settings; the message says what to fix."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve to anything


def load_key_store(config: ServiceConfig) -> KeyStore | None:
    """The configured key store, or None (no keys: allowed on loopback or with ATELIER_INSECURE=1)."""
    if config.api_keys_database_url and config.api_keys_file:
        raise InsecureConfigError(
            "both ATELIER_API_KEYS_FILE and ATELIER_API_KEYS_DATABASE_URL are set: choose one key store "
            "(a key revoked in one would still open the other)"
        )
    if config.api_keys_database_url:
        from atelier.runtime.keys_db import DatabaseKeyStore

        try:
            return DatabaseKeyStore(config.api_keys_database_url)
        except KeyStoreError as exc:
            raise InsecureConfigError(str(exc)) from None
    if config.api_keys_file:
        try:
            return FileKeyStore(Path(config.api_keys_file))
        except KeyStoreError as exc:
            raise InsecureConfigError(str(exc)) from None
    return None


def startup_checks(config: ServiceConfig, keys: KeyStore | None) -> str:
    """Refuses settings that would expose tenants' data; returns the line the server logs first
    about how callers are authenticated."""
    if config.reflection not in REFLECTION_MODES:
        raise InsecureConfigError(
            f"ATELIER_REFLECTION must be one of {', '.join(REFLECTION_MODES)}, got {config.reflection!r}"
        )
    if keys is not None:
        return f"API keys required ({keys.source}); x-atelier-tenant may only name a tenant the key grants"
    if is_loopback(config.host):
        return (
            f"running WITHOUT API keys: any local caller may act for any tenant ({config.host} is "
            "loopback only). Set ATELIER_API_KEYS_FILE (see `atelier keys create`) before exposing it"
        )
    if config.insecure:
        return (
            f"running WITHOUT API keys on {config.host} because ATELIER_INSECURE=1: anyone who can reach "
            "the port may act for any tenant"
        )
    raise InsecureConfigError(
        f"refusing to listen on {config.host} without API keys: set ATELIER_API_KEYS_FILE to a keys "
        "file (`atelier keys create --tenant <tenant> --role <role>`), bind 127.0.0.1, or set "
        "ATELIER_INSECURE=1 to accept unauthenticated callers"
    )
