"""Domain errors: plain exceptions a domain module raises without knowing gRPC.

The runtime's interceptor maps each to its gRPC status code and ``google.rpc`` details
(see :mod:`atelier.runtime.status`). Field violations name the request field with a
dotted path as in AIP-193 (``pieces[3].outline``) and say what is wrong and how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class FieldViolation:
    field: str
    description: str


class AtelierError(Exception):
    """Base of the errors the runtime maps to a gRPC status. Subclasses set ``code_name``."""

    code_name = "UNKNOWN"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidArgumentError(AtelierError):
    code_name = "INVALID_ARGUMENT"

    def __init__(self, message: str, violations: list[FieldViolation] | None = None) -> None:
        super().__init__(message)
        self.violations = list(violations or [])

    @classmethod
    def for_field(cls, field_path: str, description: str) -> InvalidArgumentError:
        return cls(f"{field_path}: {description}", [FieldViolation(field_path, description)])


class NotFoundError(AtelierError):
    code_name = "NOT_FOUND"

    def __init__(self, message: str, resource_type: str = "", resource_name: str = "") -> None:
        super().__init__(message)
        self.resource_type = resource_type
        self.resource_name = resource_name


class UnauthenticatedError(AtelierError):
    code_name = "UNAUTHENTICATED"


class PermissionDeniedError(AtelierError):
    code_name = "PERMISSION_DENIED"


class AlreadyExistsError(AtelierError):
    code_name = "ALREADY_EXISTS"


class FailedPreconditionError(AtelierError):
    code_name = "FAILED_PRECONDITION"


class ResourceExhaustedError(AtelierError):
    code_name = "RESOURCE_EXHAUSTED"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(AtelierError):
    code_name = "UNAVAILABLE"

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnimplementedError(AtelierError):
    code_name = "UNIMPLEMENTED"


class CancelledError(AtelierError):
    code_name = "CANCELLED"


class DeadlineExceededError(AtelierError):
    code_name = "DEADLINE_EXCEEDED"


@dataclass
class Violations:
    """Collects every field violation of a request, then raises them together.

    >>> v = Violations()
    >>> v.check(width_mm > 0, "fabric.width_mm", "must be > 0")
    >>> v.raise_if_any("the marker request is invalid")
    """

    items: list[FieldViolation] = field(default_factory=list)

    def add(self, field_path: str, description: str) -> None:
        self.items.append(FieldViolation(field_path, description))

    def check(self, ok: bool, field_path: str, description: str) -> bool:
        if not ok:
            self.add(field_path, description)
        return ok

    def __bool__(self) -> bool:
        return bool(self.items)

    def raise_if_any(self, summary: str = "the request is invalid") -> None:
        if not self.items:
            return
        shown = "; ".join(f"{v.field}: {v.description}" for v in self.items[:5])
        more = f" (and {len(self.items) - 5} more)" if len(self.items) > 5 else ""
        raise InvalidArgumentError(f"{summary}: {shown}{more}", self.items)
