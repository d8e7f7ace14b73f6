"""The channel every `atelier` command opens to a service, with the caller's key and TLS settings.

ATELIER_API_KEY            sent as `authorization: Bearer <key>` on every call
ATELIER_SERVER_CA_FILE     call with TLS, trusting this CA (PEM) for the server's certificate
ATELIER_CLIENT_CERT_FILE   with ATELIER_CLIENT_KEY_FILE: the client certificate for mTLS
ATELIER_SERVER_NAME        the name on the server's certificate, when it differs from the address
                           (e.g. `atelier-nesting` through `kubectl port-forward`)

These are the caller's settings; the server's own are ATELIER_TLS_* (README.md, Security).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import grpc


class _KeyInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    def __init__(self, key: str) -> None:
        self.header = ("authorization", f"Bearer {key}")

    def _details(self, details: Any) -> Any:
        metadata = [m for m in (details.metadata or ()) if m[0] != "authorization"]
        return details._replace(metadata=[*metadata, self.header])

    def intercept_unary_unary(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_unary_stream(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        return continuation(self._details(details), request)

    def intercept_stream_unary(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)

    def intercept_stream_stream(self, continuation: Callable[..., Any], details: Any, requests: Any) -> Any:
        return continuation(self._details(details), requests)


def _read(variable: str) -> bytes | None:
    path = os.environ.get(variable, "")
    if not path:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SystemExit(f"{variable} {path} cannot be read: {exc.strerror or exc}") from None


def channel(address: str, options: Sequence[tuple[str, Any]] = ()) -> grpc.Channel:
    """A channel to address, plaintext unless ATELIER_SERVER_CA_FILE is set."""
    opts = list(options)
    ca = _read("ATELIER_SERVER_CA_FILE")
    cert, key = _read("ATELIER_CLIENT_CERT_FILE"), _read("ATELIER_CLIENT_KEY_FILE")
    if (cert is None) != (key is None):
        raise SystemExit("set both ATELIER_CLIENT_CERT_FILE and ATELIER_CLIENT_KEY_FILE, or neither")
    if ca is None and cert is not None:
        raise SystemExit("a client certificate needs TLS: set ATELIER_SERVER_CA_FILE too")
    if ca is not None:
        if os.environ.get("ATELIER_SERVER_NAME"):
            opts.append(("grpc.ssl_target_name_override", os.environ["ATELIER_SERVER_NAME"]))
        made = grpc.secure_channel(address, grpc.ssl_channel_credentials(ca, key, cert), options=opts)
    else:
        made = grpc.insecure_channel(address, options=opts)
    api_key = os.environ.get("ATELIER_API_KEY", "").strip()
    return grpc.intercept_channel(made, _KeyInterceptor(api_key)) if api_key else made
