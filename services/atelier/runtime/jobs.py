"""Long work as durable jobs, exposed as ``google.longrunning.Operation`` (AIP-151).

A service submits a function; the caller gets an operation name at once and can poll,
wait, watch progress, cancel, and fetch the result later. Every state change is written
to the store before it is visible, so a restarted service still answers for finished jobs;
jobs that were running when a process died are reported as ABORTED, never left "running".

The runner here is a thread pool in the service process. The Kubernetes runner (a Job per
run, see atelier.runtime.kube) reports through the same table.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from google.longrunning import operations_pb2
from google.protobuf import any_pb2, message, timestamp_pb2
from google.rpc import code_pb2, status_pb2

from atelier.common.v1 import progress_pb2
from atelier.runtime import metrics
from atelier.runtime.context import Cancellation, current_tenant
from atelier.runtime.errors import (
    AtelierError,
    CancelledError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from atelier.runtime.storage import Migration, Store, create_tables, tenant_column, utcnow

log = logging.getLogger(__name__)

JobState = progress_pb2.JobState

_metadata = sa.MetaData()
operations_table = sa.Table(
    "atelier_operations",
    _metadata,
    sa.Column("name", sa.String(128), primary_key=True),
    tenant_column(),
    sa.Column("service", sa.String(64), nullable=False, index=True),
    sa.Column("kind", sa.String(64), nullable=False),
    sa.Column("state", sa.Integer, nullable=False),
    sa.Column("fraction", sa.Float, nullable=False, default=0.0),
    sa.Column("message", sa.String(1024), nullable=False, default=""),
    sa.Column("steps_done", sa.BigInteger, nullable=False, default=0),
    sa.Column("steps_total", sa.BigInteger, nullable=False, default=0),
    sa.Column("cancel_requested", sa.Boolean, nullable=False, default=False),
    sa.Column("runner", sa.String(32), nullable=False, default="local"),
    sa.Column("create_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("update_time", sa.DateTime(timezone=True), nullable=False),
    sa.Column("error_code", sa.Integer, nullable=False, default=0),
    sa.Column("error_message", sa.Text, nullable=False, default=""),
    # Serialized google.protobuf.Any: the final response, and the latest partial result.
    sa.Column("response", sa.LargeBinary, nullable=True),
    sa.Column("partial", sa.LargeBinary, nullable=True),
)

MIGRATIONS = [Migration(1, "create atelier_operations", create_tables(operations_table))]

TERMINAL = {JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED}
MAX_PAGE_SIZE = 200


def _timestamp(value: datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value)
    return ts


def _pack(msg: message.Message) -> bytes:
    packed = any_pb2.Any()
    packed.Pack(msg)
    return packed.SerializeToString()


@dataclass
class JobHandle:
    """What a running job sees: progress reporting, partial results and cancellation."""

    name: str
    manager: JobManager
    cancellation: Cancellation = field(default_factory=Cancellation)
    _last_write: float = 0.0

    def progress(
        self,
        fraction: float,
        message: str = "",
        steps_done: int = 0,
        steps_total: int = 0,
        partial: message.Message | None = None,
    ) -> None:
        """Report progress (and optionally the best result so far). Raises when cancelled."""
        now = time.monotonic()
        # Writes are throttled to 4 a second; watchers still see every update in memory.
        values: dict[str, Any] = {
            "fraction": float(fraction),
            "message": message[:1024],
            "steps_done": int(steps_done),
            "steps_total": int(steps_total),
            "update_time": utcnow(),
        }
        if partial is not None:
            values["partial"] = _pack(partial)
        self.manager._publish(self.name, values, persist=now - self._last_write >= 0.25)
        if now - self._last_write >= 0.25:
            self._last_write = now
        self.cancellation.check()


JobFunction = Callable[[JobHandle], message.Message]

# The cancellation reason jobs see when the service process stops (not the caller's cancel).
SHUTDOWN_REASON = "the service is shutting down"


class JobDetached(Exception):
    """Raised by a job function whose work goes on outside this process (a Kubernetes Job, see
    atelier.runtime.kube) when the service stops: the operation keeps its state for the next
    process to resume instead of being recorded as cancelled."""


_PATH = re.compile(r"(?:[A-Za-z]:)?(?:[/\\][\w.\-]+)+")


def _in_words(exc: BaseException) -> str:
    """What went wrong, for the caller: the message up to any traceback, on one line, without
    server paths (a solver's stderr carries both), at most 200 characters."""
    text = str(exc).split("Traceback (most recent call last)")[0]
    text = _PATH.sub("<path>", " ".join(text.split())).rstrip(" :")[:200]
    return text or f"the job failed unexpectedly ({type(exc).__name__})"


class JobManager:
    """Runs and records the jobs of one service."""

    def __init__(self, store: Store, service: str, workers: int = 2) -> None:
        self.store = store
        self.service = service
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{service}-job")
        self._handles: dict[str, JobHandle] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        store.migrate("runtime.jobs", MIGRATIONS)
        self._recover()

    def _recover(self) -> None:
        """Jobs left queued or running by a previous process of this service did not finish."""
        with self.store.engine.begin() as conn:
            result = conn.execute(
                operations_table.update()
                .where(operations_table.c.service == self.service)
                .where(operations_table.c.runner == "local")
                .where(operations_table.c.state.in_([JobState.JOB_STATE_QUEUED, JobState.JOB_STATE_RUNNING]))
                .values(
                    state=JobState.JOB_STATE_FAILED,
                    error_code=code_pb2.ABORTED,
                    error_message="interrupted: the service stopped before the job finished; submit it again",
                    update_time=utcnow(),
                )
            )
        if result.rowcount:
            log.warning("marked %d interrupted jobs of %s as failed", result.rowcount, self.service)

    # -- submitting and running -------------------------------------------------------------

    def submit(self, kind: str, fn: JobFunction, tenant: str | None = None, runner: str = "local") -> str:
        """Run fn in this process; runner names where the work itself runs ("local" jobs are
        marked interrupted when the service restarts, others are resumed with attach())."""
        name = f"operations/{self.service}/{uuid.uuid4().hex}"
        now = utcnow()
        with self.store.engine.begin() as conn:
            conn.execute(
                operations_table.insert().values(
                    name=name,
                    tenant_id=tenant or current_tenant(),
                    service=self.service,
                    kind=kind,
                    state=JobState.JOB_STATE_QUEUED,
                    fraction=0.0,
                    message="queued",
                    steps_done=0,
                    steps_total=0,
                    cancel_requested=False,
                    runner=runner,
                    create_time=now,
                    update_time=now,
                    error_code=0,
                    error_message="",
                )
            )
        handle = JobHandle(name=name, manager=self)
        self._handles[name] = handle
        self._pool.submit(self._run, handle, kind, fn)
        return name

    def attach(self, name: str, kind: str, fn: JobFunction) -> None:
        """Run fn for an existing, unfinished operation (resuming a job that runs elsewhere)."""
        handle = JobHandle(name=name, manager=self)
        self._handles[name] = handle
        self._pool.submit(self._run, handle, kind, fn)

    def _run(self, handle: JobHandle, kind: str, fn: JobFunction) -> None:
        if handle.cancellation.cancelled:
            self._finish(
                handle.name, JobState.JOB_STATE_CANCELLED, code_pb2.CANCELLED, "cancelled before it started"
            )
            return
        self._publish(
            handle.name,
            {"state": JobState.JOB_STATE_RUNNING, "message": "running", "update_time": utcnow()},
            persist=True,
        )
        metrics.jobs_running.labels(self.service, kind).inc()
        started = time.monotonic()
        try:
            response = fn(handle)
            self._finish(handle.name, JobState.JOB_STATE_SUCCEEDED, 0, "", response)
        except JobDetached as exc:
            log.info("job %s detached: %s", handle.name, exc)
        except CancelledError as exc:
            self._finish(handle.name, JobState.JOB_STATE_CANCELLED, code_pb2.CANCELLED, exc.message)
        except AtelierError as exc:
            self._finish(
                handle.name, JobState.JOB_STATE_FAILED, code_pb2.Code.Value(exc.code_name), exc.message
            )
        except Exception as exc:
            log.exception("job %s failed", handle.name)
            # The message may hold a traceback or server paths (a worker's stderr): those go to the
            # log only; the caller gets words and the operation name to look the log up by.
            self._finish(
                handle.name,
                JobState.JOB_STATE_FAILED,
                code_pb2.INTERNAL,
                f"internal error: {_in_words(exc)}; the server log has the details under {handle.name}",
            )
        finally:
            metrics.jobs_running.labels(self.service, kind).dec()
            metrics.job_seconds.labels(self.service, kind).observe(time.monotonic() - started)
            self._handles.pop(handle.name, None)

    def _finish(
        self, name: str, state: int, code: int, error: str, response: message.Message | None = None
    ) -> None:
        values: dict[str, Any] = {
            "state": state,
            "error_code": code,
            "error_message": error,
            "update_time": utcnow(),
        }
        if state == JobState.JOB_STATE_SUCCEEDED:
            values.update(fraction=1.0, message="done")
        if response is not None:
            values["response"] = _pack(response)
        self._publish(name, values, persist=True)
        row = self._row(name, tenant=None)
        metrics.jobs_total.labels(self.service, row["kind"], JobState.Name(JobState.ValueType(state))).inc()

    def _publish(self, name: str, values: dict[str, Any], persist: bool) -> None:
        with self._changed:
            self._live.setdefault(name, {}).update(values)
            if persist:
                with self.store.engine.begin() as conn:
                    conn.execute(
                        operations_table.update()
                        .where(operations_table.c.name == name)
                        .values(**self._live[name])
                    )
                if values.get("state") in TERMINAL:
                    self._live.pop(name, None)
            self._changed.notify_all()

    # -- reading ------------------------------------------------------------------------------

    def _row(self, name: str, tenant: str | None) -> dict[str, Any]:
        query = operations_table.select().where(operations_table.c.name == name)
        if tenant is not None:
            query = query.where(operations_table.c.tenant_id == tenant)
        with self.store.engine.connect() as conn:
            row = conn.execute(query).mappings().first()
        if row is None:
            raise NotFoundError(f"operation {name!r} not found", "google.longrunning.Operation", name)
        merged = dict(row)
        with self._changed:
            merged.update(self._live.get(name, {}))
        return merged

    def get(self, name: str) -> operations_pb2.Operation:
        return self.to_operation(self._row(name, current_tenant()))

    def partial(self, name: str) -> any_pb2.Any | None:
        """The latest partial result a running job published (or the final response)."""
        row = self._row(name, current_tenant())
        blob = row.get("response") or row.get("partial")
        if not blob:
            return None
        packed = any_pb2.Any()
        packed.ParseFromString(blob)
        return packed

    def list(
        self, page_size: int = 50, page_token: str = "", kind: str = ""
    ) -> tuple[list[operations_pb2.Operation], str]:
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgumentError.for_field("page_size", f"must be 0..{MAX_PAGE_SIZE}")
        size = page_size or 50
        offset = 0
        if page_token:
            try:
                offset = int(page_token)
            except ValueError:
                raise InvalidArgumentError.for_field(
                    "page_token", "not a token from a previous response"
                ) from None
        query = (
            operations_table.select()
            .where(operations_table.c.tenant_id == current_tenant())
            .where(operations_table.c.service == self.service)
            .order_by(operations_table.c.create_time.desc(), operations_table.c.name)
            .offset(offset)
            .limit(size + 1)
        )
        if kind:
            query = query.where(operations_table.c.kind == kind)
        with self.store.engine.connect() as conn:
            rows = [dict(r) for r in conn.execute(query).mappings()]
        more = len(rows) > size
        return [self.to_operation(r) for r in rows[:size]], str(offset + size) if more else ""

    def watch(
        self, name: str, cancellation: Cancellation | None = None, interval_s: float = 1.0
    ) -> Iterator[operations_pb2.Operation]:
        """Yields the operation whenever it changes (at least every interval_s) until it is done."""
        last: tuple[Any, ...] | None = None
        while True:
            op = self.get(name)
            meta = progress_pb2.OperationMetadata()
            op.metadata.Unpack(meta)
            key = (op.done, meta.progress.fraction, meta.progress.message, meta.progress.steps_done)
            if key != last:
                last = key
                yield op
            if op.done:
                return
            if cancellation is not None:
                cancellation.check()
            with self._changed:
                self._changed.wait(interval_s)

    def wait(self, name: str, timeout_s: float) -> operations_pb2.Operation:
        deadline = time.monotonic() + timeout_s
        while True:
            op = self.get(name)
            if op.done or time.monotonic() >= deadline:
                return op
            with self._changed:
                self._changed.wait(min(0.5, max(0.0, deadline - time.monotonic())))

    def cancel(self, name: str) -> None:
        row = self._row(name, current_tenant())
        if row["state"] in TERMINAL:
            return  # AIP-151: cancelling a finished operation is not an error
        with self.store.engine.begin() as conn:
            conn.execute(
                operations_table.update()
                .where(operations_table.c.name == name)
                .values(cancel_requested=True, update_time=utcnow())
            )
        handle = self._handles.get(name)
        if handle is not None:
            handle.cancellation.cancel("cancelled by request")

    def delete(self, name: str) -> None:
        row = self._row(name, current_tenant())
        if row["state"] not in TERMINAL:
            raise FailedPreconditionError(f"operation {name!r} is still running; cancel it first")
        with self.store.engine.begin() as conn:
            conn.execute(operations_table.delete().where(operations_table.c.name == name))

    def shutdown(self, wait_s: float) -> None:
        """Give running jobs wait_s to finish, then cancel them."""
        deadline = time.monotonic() + wait_s
        while self._handles and time.monotonic() < deadline:
            time.sleep(0.1)
        for handle in list(self._handles.values()):
            handle.cancellation.cancel(SHUTDOWN_REASON)
        self._pool.shutdown(wait=True, cancel_futures=True)

    def to_operation(self, row: dict[str, Any]) -> operations_pb2.Operation:
        state = int(row["state"])
        meta = progress_pb2.OperationMetadata(
            service=row["service"],
            kind=row["kind"],
            runner=row["runner"],
            cancel_requested=bool(row["cancel_requested"]),
            progress=progress_pb2.Progress(
                state=JobState.ValueType(state),
                fraction=float(row["fraction"]),
                message=row["message"],
                steps_done=int(row["steps_done"]),
                steps_total=int(row["steps_total"]),
                create_time=_timestamp(row["create_time"]),
                update_time=_timestamp(row["update_time"]),
            ),
        )
        op = operations_pb2.Operation(name=row["name"], done=state in TERMINAL)
        op.metadata.Pack(meta)
        if state == JobState.JOB_STATE_SUCCEEDED and row.get("response"):
            op.response.ParseFromString(row["response"])
        elif state in (JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED):
            op.error.CopyFrom(
                status_pb2.Status(
                    code=int(row["error_code"]) or code_pb2.UNKNOWN, message=row["error_message"]
                )
            )
        return op
