"""TLS and mutual TLS for the gRPC port, from PEM files, refusing half-configured settings.

- ``ATELIER_TLS_CERT_FILE`` + ``ATELIER_TLS_KEY_FILE``: serve TLS (one without the other: refuse).
- ``ATELIER_TLS_CLIENT_CA_FILE``: also require a client certificate signed by that CA (mTLS).
  ``ATELIER_TLS_CLIENT_AUTH=1`` states that mTLS is wanted, so a missing CA file refuses to start
  instead of silently serving without client certificates.
- ``ATELIER_HEALTH_PORT``: a second, plaintext port that serves only ``grpc.health.v1.Health``,
  for probes that cannot present a certificate (the kubelet's gRPC probe speaks plaintext).
"""

from __future__ import annotations

from concurrent import futures
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2_grpc

from atelier.runtime.auth import InsecureConfigError
from atelier.runtime.config import ServiceConfig


def _read_pem(setting: str, path: str, marker: str) -> bytes:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise InsecureConfigError(f"ATELIER_{setting} {path} cannot be read: {exc.strerror or exc}") from None
    if marker.encode() not in data:
        what = marker.strip("-").removeprefix("BEGIN ")
        raise InsecureConfigError(f"ATELIER_{setting} {path} holds no PEM {what} block")
    return data


def server_credentials(config: ServiceConfig) -> grpc.ServerCredentials | None:
    """TLS credentials for the gRPC port, None for plaintext; InsecureConfigError when half-set."""
    cert, key, ca = config.tls_cert_file, config.tls_key_file, config.tls_client_ca_file
    if bool(cert) != bool(key):
        missing = "ATELIER_TLS_KEY_FILE" if cert else "ATELIER_TLS_CERT_FILE"
        raise InsecureConfigError(
            f"TLS is half configured: {missing} is not set. Set both ATELIER_TLS_CERT_FILE and "
            "ATELIER_TLS_KEY_FILE to serve TLS, or neither for plaintext"
        )
    if (ca or config.tls_client_auth) and not cert:
        raise InsecureConfigError(
            "client certificates (ATELIER_TLS_CLIENT_CA_FILE / ATELIER_TLS_CLIENT_AUTH) need server TLS: "
            "set ATELIER_TLS_CERT_FILE and ATELIER_TLS_KEY_FILE too"
        )
    if config.tls_client_auth and not ca:
        raise InsecureConfigError(
            "ATELIER_TLS_CLIENT_AUTH=1 asks for client certificates but ATELIER_TLS_CLIENT_CA_FILE is not set: "
            "name the CA that signs the clients' certificates"
        )
    if not cert:
        return None
    chain = _read_pem("TLS_CERT_FILE", cert, "-----BEGIN CERTIFICATE-----")
    private = _read_pem("TLS_KEY_FILE", key, "PRIVATE KEY-----")
    roots = _read_pem("TLS_CLIENT_CA_FILE", ca, "-----BEGIN CERTIFICATE-----") if ca else None
    return grpc.ssl_server_credentials(
        [(private, chain)], root_certificates=roots, require_client_auth=roots is not None
    )


def describe(config: ServiceConfig) -> str:
    if not config.tls_cert_file:
        return "plaintext gRPC (no TLS)"
    if config.tls_client_ca_file:
        return "TLS with client certificates required (mTLS)"
    return "TLS"


def health_only_server(servicer: health.HealthServicer, host: str, port: int) -> tuple[grpc.Server, int]:
    """A plaintext server with the health service alone (the same servicer as the main port)."""
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2, thread_name_prefix="health"))
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    bound = server.add_insecure_port(f"{host}:{port}")
    if bound == 0:
        raise OSError(f"could not bind the health port {host}:{port}: is another process using it?")
    return server, bound
