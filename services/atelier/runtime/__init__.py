"""The one server runtime every Atelier service runs on.

A service is a contract (protos/atelier/<name>/v1), a domain module that knows nothing of gRPC,
a thin servicer, and a ``build()`` function returning a :class:`ServiceSpec`. The runtime adds
health, reflection, metrics, logging, configuration, auth, error mapping, storage and jobs.
"""

from atelier.runtime.errors import (
    AlreadyExistsError,
    AtelierError,
    CancelledError,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    ResourceExhaustedError,
    UnavailableError,
    UnimplementedError,
    Violations,
)

__all__ = [
    "AlreadyExistsError",
    "AtelierError",
    "CancelledError",
    "DeadlineExceededError",
    "FailedPreconditionError",
    "InvalidArgumentError",
    "NotFoundError",
    "ResourceExhaustedError",
    "UnavailableError",
    "UnimplementedError",
    "Violations",
]
