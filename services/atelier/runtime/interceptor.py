"""The server interceptor: request id, tenant, auth, metrics, logs and error mapping for
every RPC of every service, written once."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from atelier.runtime import limits, metrics
from atelier.runtime.auth import HEALTH_SERVICE, REFLECTION_SERVICES, TENANT_HEADER, Authoriser
from atelier.runtime.context import method_var, request_id_var, tenant_var
from atelier.runtime.errors import AtelierError, InvalidArgumentError
from atelier.runtime.readiness import outage_error
from atelier.runtime.shedding import Admission, Ticket
from atelier.runtime.status import abort

log = logging.getLogger("atelier.rpc")

# Not logged per call: probes and tooling call these all the time (auth.Authoriser says which are open).
OPEN_SERVICES = frozenset({HEALTH_SERVICE, *REFLECTION_SERVICES})
REQUEST_ID_HEADER = "x-request-id"


class _Malformed:
    """Stands in for a request whose bytes did not parse, so the call is answered INVALID_ARGUMENT
    after the auth check, instead of grpc's INTERNAL with an ERROR traceback before it."""

    def __init__(self, error: Exception) -> None:
        self.error = error


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:
            return _Malformed(exc)

    return parse


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def _code_name(context: grpc.ServicerContext) -> str:
    code = context.code()  # set by abort/set_code; None when the handler returned normally
    if code is None:
        if not context.is_active():  # the client gave up: its deadline passed or it cancelled
            remaining = context.time_remaining()
            return "DEADLINE_EXCEEDED" if remaining is not None and remaining <= 0 else "CANCELLED"
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class _MethodMetrics:
    """One method's metric children, looked up once: ``Counter.labels()`` takes a lock and builds a
    key on every call, several times per RPC."""

    def __init__(self, labels: tuple[str, str, str]) -> None:
        self.labels = labels
        self.started = metrics.started_total.labels(*labels)
        self.received = metrics.msg_received_total.labels(*labels)
        self.sent = metrics.msg_sent_total.labels(*labels)
        self.seconds = metrics.handling_seconds.labels(*labels)
        self._handled: dict[str, Any] = {}

    def handled(self, code: str) -> Any:
        child = self._handled.get(code)
        if child is None:
            child = self._handled[code] = metrics.handled_total.labels(*self.labels, code)
        return child


class ServerInterceptor(grpc.ServerInterceptor):
    def __init__(self, service: str, authoriser: Authoriser, admission: Admission | None = None) -> None:
        self.service = service
        self.authoriser = authoriser
        self.default_tenant = authoriser.default_tenant
        self.admission = admission
        self._metrics: dict[tuple[str, str, str], _MethodMetrics] = {}

    def metrics_of(self, labels: tuple[str, str, str]) -> _MethodMetrics:
        found = self._metrics.get(labels)
        if found is None:  # a race only builds the same children twice
            found = self._metrics[labels] = _MethodMetrics(labels)
        return found

    def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None
        full_method: str = details.method  # type: ignore[attr-defined]
        grpc_service, _, grpc_method = full_method.lstrip("/").partition("/")
        rpc_type = _rpc_type(handler)
        labels = (rpc_type, grpc_service, grpc_method)
        metadata = dict(details.invocation_metadata or ())  # type: ignore[attr-defined]
        wrap = _Call(self, labels, full_method, metadata)

        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                wrap.unary(handler.unary_unary),
                _tolerant(handler.request_deserializer),
                handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                wrap.streaming(handler.unary_stream),
                _tolerant(handler.request_deserializer),
                handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                wrap.unary(handler.stream_unary, streaming_request=True),
                _tolerant(handler.request_deserializer),
                handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            wrap.streaming(handler.stream_stream, streaming_request=True),
            _tolerant(handler.request_deserializer),
            handler.response_serializer,
        )


class _Call:
    """What the interceptor does around one RPC."""

    def __init__(
        self, owner: ServerInterceptor, labels: tuple[str, str, str], method: str, metadata: dict[str, Any]
    ) -> None:
        self.owner = owner
        self.labels = labels
        self.metrics = owner.metrics_of(labels)
        self.method = method
        self.metadata = metadata
        self.key_id = ""  # the caller's key, for the audit trail in the RPC's log line

    def _begin(self, context: grpc.ServicerContext) -> tuple[float, list[Any]]:
        self.metrics.started.inc()
        request_id = str(self.metadata.get(REQUEST_ID_HEADER) or uuid.uuid4().hex)
        tenant = str(self.metadata.get(TENANT_HEADER) or self.owner.default_tenant)
        tokens = [request_id_var.set(request_id), tenant_var.set(tenant), method_var.set(self.method)]
        context.set_trailing_metadata(((REQUEST_ID_HEADER, request_id),))
        return time.perf_counter(), tokens

    def _admit(self, context: grpc.ServicerContext, request: Any = None) -> None:
        """Key, tenant and role (see atelier.runtime.auth), then the request's bytes."""
        try:
            access = self.owner.authoriser.admit(self.labels[1], self.labels[2], self.metadata)
        except AtelierError as exc:
            abort(context, exc)
        tenant_var.set(access.tenant)  # the token from _begin still restores the outer value
        self.key_id = access.principal.key_id if access.principal else ""
        if isinstance(request, _Malformed):
            abort(context, self._malformed(request))

    def _malformed(self, request: _Malformed) -> InvalidArgumentError:
        metrics.malformed_requests_total.labels(*self.labels).inc()
        log.warning("rpc %s: request bytes are not a valid message: %s", self.method, request.error)
        return InvalidArgumentError(
            f"the request is not a valid {self.labels[1]}/{self.labels[2]} message (its bytes do not parse)"
        )

    def _enter(self, context: grpc.ServicerContext) -> Ticket | None:
        """Load shedding (atelier.runtime.shedding): a ticket, or the call ends RESOURCE_EXHAUSTED."""
        if self.owner.admission is None:
            return None
        try:
            return self.owner.admission.admit(self.labels[1], self.labels[2], tenant_var.get())
        except AtelierError as exc:
            abort(context, exc)
            raise

    def _end(self, context: grpc.ServicerContext, started: float, tokens: list[Any], code: str) -> None:
        elapsed = time.perf_counter() - started
        self.metrics.handled(code).inc()
        self.metrics.seconds.observe(elapsed)
        if self.labels[1] not in OPEN_SERVICES:
            level = logging.WARNING if code in {"INTERNAL", "UNKNOWN", "DATA_LOSS"} else logging.INFO
            log.log(
                level,
                "rpc %s %s",
                self.method,
                code,
                extra={"grpc_code": code, "duration_ms": round(elapsed * 1000, 2), "key_id": self.key_id},
            )
        for var, token in zip((request_id_var, tenant_var, method_var), tokens, strict=True):
            var.reset(token)

    def _fail(self, context: grpc.ServicerContext, exc: BaseException) -> None:
        """Turn an exception from the handler into the RPC's status (always raises)."""
        if not isinstance(exc, AtelierError):  # a lost database is UNAVAILABLE (retryable), not INTERNAL
            exc = outage_error(exc) or exc
        if isinstance(exc, AtelierError):
            abort(context, exc)
        if context.code() not in (None, grpc.StatusCode.OK):
            raise exc  # the handler already ended the call with context.abort(...)
        log.exception("unhandled error in %s", self.method)
        context.abort(
            grpc.StatusCode.INTERNAL,
            f"internal error (request id {request_id_var.get()}); the server log has the details",
        )

    def _count_requests(self, requests: Iterator[Any]) -> Iterator[Any]:
        for index, request in enumerate(requests):
            self.metrics.received.inc()
            if isinstance(request, _Malformed):
                raise self._malformed(request)
            try:
                limits.check_request(request)
            except InvalidArgumentError as exc:  # raised inside the handler's loop: mapped by _fail
                # Name the message of the stream, as "[2].observations[5].value" (earlier ones were handled).
                raise InvalidArgumentError(
                    f"stream message {index}: {exc.message}",
                    [type(v)(f"[{index}].{v.field}", v.description) for v in exc.violations],
                ) from None
            yield request

    def unary(self, behaviour: Callable[..., Any], streaming_request: bool = False) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Any:
            code = "UNKNOWN"
            ticket = None
            started, tokens = self._begin(context)
            try:
                self._admit(context, None if streaming_request else request)
                ticket = self._enter(context)
                if streaming_request:
                    request = self._count_requests(request)
                else:
                    self.metrics.received.inc()
                try:
                    if not streaming_request:
                        limits.check_request(request)  # NUL bytes, string lengths, floats, Timestamps
                    response = behaviour(request, context)
                except Exception as exc:
                    self._fail(context, exc)
                self.metrics.sent.inc()
                code = _code_name(context)
                return response
            except BaseException:
                code = _code_name(context) if context.code() is not None else "UNKNOWN"
                raise
            finally:
                if ticket is not None:
                    ticket.release()
                self._end(context, started, tokens, code)

        return handle

    def streaming(self, behaviour: Callable[..., Any], streaming_request: bool = False) -> Callable[..., Any]:
        def handle(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
            code = "UNKNOWN"
            ticket = None
            started, tokens = self._begin(context)
            try:
                self._admit(context, None if streaming_request else request)
                ticket = self._enter(context)
                if streaming_request:
                    request = self._count_requests(request)
                else:
                    self.metrics.received.inc()
                try:
                    if not streaming_request:
                        limits.check_request(request)
                    for response in behaviour(request, context):
                        self.metrics.sent.inc()
                        yield response
                except GeneratorExit:
                    code = "CANCELLED"
                    raise
                except Exception as exc:
                    self._fail(context, exc)
                code = _code_name(context)
            except GeneratorExit:
                code = "CANCELLED"
                raise
            except BaseException:
                code = _code_name(context) if context.code() is not None else "UNKNOWN"
                raise
            finally:
                if ticket is not None:
                    ticket.release()
                self._end(context, started, tokens, code)

        return handle
