"""Configuration from environment variables, with documented defaults.

Every setting is ``ATELIER_<NAME>``; a per-service override is ``ATELIER_<SERVICE>_<NAME>``
(e.g. ``ATELIER_NESTING_PORT``). The table in README.md lists them all; ``atelier config``
prints the values in effect.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

# gRPC and metrics ports of each service on localhost (``make run``).
DEFAULT_PORTS: dict[str, tuple[int, int]] = {
    "generation": (50051, 9101),
    "body": (50052, 9102),
    "nesting": (50053, 9103),
    "inspection": (50054, 9104),
    "trends": (50055, 9105),
    "recommendations": (50056, 9106),
}


def _env(service: str, name: str, default: str) -> str:
    """ATELIER_<SERVICE>_<NAME>, then ATELIER_<NAME>, then the default."""
    specific = f"ATELIER_{service.upper()}_{name}" if service else ""
    if specific and specific in os.environ:
        return os.environ[specific]
    return os.environ.get(f"ATELIER_{name}", default)


def _env_bool(service: str, name: str, default: bool) -> bool:
    value = _env(service, name, "1" if default else "0").strip().lower()
    if value in {"1", "true", "yes", "on"}:
        return True
    if value in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"ATELIER_{name} must be true or false, got {value!r}")


def default_data_dir() -> Path:
    return Path(os.environ.get("ATELIER_DATA_DIR", Path.cwd() / ".atelier")).resolve()


@dataclass(frozen=True)
class ServiceConfig:
    """What the runtime needs to serve one service. Domain settings live in the service."""

    service: str
    host: str = "127.0.0.1"
    port: int = 0
    metrics_port: int = 0
    data_dir: Path = field(default_factory=default_data_dir)
    database_url: str = ""
    log_level: str = "INFO"
    log_format: str = "json"
    max_workers: int = 16
    max_message_bytes: int = 64 * 1024 * 1024
    max_concurrent_rpcs: int = 16
    grace_s: float = 30.0
    default_tenant: str = "default"
    # Security (see README "Security"): keys file or key database, TLS files, and the escape hatch.
    api_keys_file: str = ""
    api_keys_database_url: str = ""
    insecure: bool = False
    tls_cert_file: str = ""
    tls_key_file: str = ""
    tls_client_ca_file: str = ""
    tls_client_auth: bool = False
    health_port: int = 0
    reflection: str = "open"

    @property
    def service_data_dir(self) -> Path:
        return self.data_dir / self.service

    @classmethod
    def from_env(cls, service: str) -> ServiceConfig:
        port, metrics_port = DEFAULT_PORTS.get(service, (0, 0))
        data_dir = default_data_dir()
        # One SQLite file per service by default: services are separate processes and own their tables.
        database_url = _env(service, "DATABASE_URL", "") or f"sqlite:///{data_dir / (service + '.db')}"
        if _env(service, "API_KEYS", ""):
            raise ValueError(
                "ATELIER_API_KEYS (plain keys, bound to no tenant) is no longer accepted: create a keys "
                "file with `atelier keys create --tenant <tenant> --role <role>` and set ATELIER_API_KEYS_FILE"
            )
        config = cls(
            service=service,
            host=_env(service, "HOST", "127.0.0.1"),
            port=int(_env(service, "PORT", str(port))),
            metrics_port=int(_env(service, "METRICS_PORT", str(metrics_port))),
            data_dir=data_dir,
            database_url=database_url,
            log_level=_env(service, "LOG_LEVEL", "INFO").upper(),
            log_format=_env(service, "LOG_FORMAT", "json").lower(),
            max_workers=int(_env(service, "MAX_WORKERS", "16")),
            max_message_bytes=int(_env(service, "MAX_MESSAGE_BYTES", str(64 * 1024 * 1024))),
            max_concurrent_rpcs=int(_env(service, "MAX_CONCURRENT_RPCS", "16")),
            grace_s=float(_env(service, "GRACE_SECONDS", "30")),
            default_tenant=_env(service, "DEFAULT_TENANT", "default"),
            api_keys_file=_env(service, "API_KEYS_FILE", ""),
            api_keys_database_url=_env(service, "API_KEYS_DATABASE_URL", ""),
            insecure=_env_bool(service, "INSECURE", False),
            tls_cert_file=_env(service, "TLS_CERT_FILE", ""),
            tls_key_file=_env(service, "TLS_KEY_FILE", ""),
            tls_client_ca_file=_env(service, "TLS_CLIENT_CA_FILE", ""),
            tls_client_auth=_env_bool(service, "TLS_CLIENT_AUTH", False),
            health_port=int(_env(service, "HEALTH_PORT", "0")),
            reflection=_env(service, "REFLECTION", "open").strip().lower(),
        )
        config.validate()
        return config

    def validate(self) -> None:
        problems = []
        if not 0 <= self.port <= 65535:
            problems.append(f"port {self.port} is not 0..65535")
        if not 0 <= self.metrics_port <= 65535:
            problems.append(f"metrics port {self.metrics_port} is not 0..65535")
        if not 0 <= self.health_port <= 65535:
            problems.append(f"ATELIER_HEALTH_PORT {self.health_port} is not 0..65535")
        if self.max_workers < 1:
            problems.append("ATELIER_MAX_WORKERS must be >= 1")
        if self.max_message_bytes < 1024:
            problems.append("ATELIER_MAX_MESSAGE_BYTES must be >= 1024")
        if self.grace_s < 0:
            problems.append("ATELIER_GRACE_SECONDS must be >= 0")
        if self.log_format not in {"json", "text"}:
            problems.append("ATELIER_LOG_FORMAT must be json or text")
        if problems:
            raise ValueError(f"invalid configuration for {self.service}: " + "; ".join(problems))

    def setting(self, name: str, default: str) -> str:
        """A service's own setting: ATELIER_<SERVICE>_<NAME>, then ATELIER_<NAME>, then default."""
        return _env(self.service, name, default)

    def setting_bool(self, name: str, default: bool) -> bool:
        return _env_bool(self.service, name, default)
