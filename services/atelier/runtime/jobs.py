"""Long work as durable jobs, exposed as ``google.longrunning.Operation`` (AIP-151).

A service submits a function; the caller gets an operation name at once and can poll,
wait, watch progress, cancel, and fetch the result later. Every state change is written
to the store before it is visible, so a restarted service still answers for finished jobs.

Several replicas of a service share the table (PostgreSQL in the chart). Each job has an
owner, the replica running it (``ATELIER_REPLICA_ID``, by default host-pid-random, unique per
process), and a lease (``ATELIER_JOB_LEASE_SECONDS``, 30 s) that the owner's heartbeat renews
every third of it. Only the owner writes a job's row (every write is conditional on it), so:

- a replica that starts, or sweeps while it runs, fails only the jobs whose lease expired (their
  owner died: kill -9, a lost node) as ABORTED, and logs which and whose; a running job of a
  live replica is never touched. Such a job is never left "running": it fails one lease after
  its owner stopped.
- a cancel sent to any replica sets ``cancel_requested`` in the row; the owner polls that flag
  every quarter second while it runs jobs and cancels the job's token, so it stops within a
  second (as soon as the job's code next calls ``progress`` or ``cancellation.check``).
- an owner whose lease lapsed (a long stall) and whose job was failed meanwhile finds its writes
  refused and stops the job, instead of overwriting the row.

Replica clocks are compared through the lease times, so they must agree to well within a lease
(NTP does). The runner here is a thread pool in the service process. The Kubernetes runner (a
Job per run, see atelier.runtime.kube) reports through the same table; its operations outlive
their replica and are adopted by another one (``adopt``) once their lease expired.
"""

from __future__ import annotations

import logging
import os
import re
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
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
    # The replica running the job and until when its claim holds (renewed by its heartbeat).
    sa.Column("owner", sa.String(128), nullable=False, default="", server_default=""),
    sa.Column("lease_expire_time", sa.DateTime(timezone=True), nullable=True),
)


def _add_lease_columns(conn: sa.Connection) -> None:
    """Version 2: owner and lease on a table created by version 1 (a fresh table has them)."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("atelier_operations")}
    for column in (operations_table.c.owner, operations_table.c.lease_expire_time):
        if column.name in have:
            continue
        kind = column.type.compile(dialect=conn.dialect)
        extra = " NOT NULL DEFAULT ''" if column.name == "owner" else ""
        conn.execute(sa.text(f"ALTER TABLE atelier_operations ADD COLUMN {column.name} {kind}{extra}"))


MIGRATIONS = [
    Migration(1, "create atelier_operations", create_tables(operations_table)),
    Migration(2, "job owner and lease", _add_lease_columns),
]

TERMINAL = {JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED, JobState.JOB_STATE_CANCELLED}
UNFINISHED = [JobState.JOB_STATE_QUEUED, JobState.JOB_STATE_RUNNING]
MAX_PAGE_SIZE = 200
DEFAULT_LEASE_S = 30.0
# How often an owner looks for cancel flags set through another replica ("stops within a second").
CANCEL_POLL_S = 0.25


def default_replica_id() -> str:
    """Unique per process: the pod name (HOSTNAME in Kubernetes), the pid and a random tail, so a
    restarted process never mistakes its predecessor's jobs for its own."""
    host = os.environ.get("HOSTNAME") or socket.gethostname()
    return f"{host[:100]}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


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
    _finished: bool = False  # its final state is being written: no longer this replica's to renew

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
# ... and when another replica took the job over because this one's lease had lapsed.
LOST_LEASE_REASON = "this replica lost the job's lease (it stalled longer than the lease)"

# Called with (operation name, kind) for an operation whose owner died, once this replica owns it.
Adopter = Callable[[str, str], None]


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
    """Runs and records the jobs of one service (one replica of it)."""

    def __init__(
        self,
        store: Store,
        service: str,
        workers: int = 2,
        owner: str | None = None,
        lease_s: float = DEFAULT_LEASE_S,
    ) -> None:
        if lease_s <= 0:
            raise ValueError("the job lease must be > 0 seconds")
        self.store = store
        self.service = service
        self.owner = owner or default_replica_id()
        self.lease_s = float(lease_s)
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=f"{service}-job")
        self._handles: dict[str, JobHandle] = {}
        self._live: dict[str, dict[str, Any]] = {}
        self._changed = threading.Condition()
        self._adopters: dict[str, Adopter] = {}
        self._closing = threading.Event()
        store.migrate("runtime.jobs", MIGRATIONS)
        self.reclaim()
        self._heartbeat = threading.Thread(target=self._beat, name=f"{service}-job-lease", daemon=True)
        self._heartbeat.start()

    # -- ownership --------------------------------------------------------------------------

    def _lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=self.lease_s)

    @staticmethod
    def _expired(now: datetime) -> sa.ColumnElement[bool]:
        t = operations_table
        return sa.or_(t.c.lease_expire_time.is_(None), t.c.lease_expire_time < now)

    def reclaim(self) -> list[tuple[str, str]]:
        """Fail this service's in-process jobs whose owner's lease expired (the replica died
        without finishing them) and hand other runners' orphans to their adopter. Runs at start
        and from the heartbeat; returns the (operation, runner) pairs it took over."""
        t = operations_table
        now = utcnow()
        query = (
            sa.select(t.c.name, t.c.kind, t.c.runner, t.c.owner, t.c.lease_expire_time)
            .where(t.c.service == self.service)
            .where(t.c.state.in_(UNFINISHED))
            .where(self._expired(now))
        )
        with self.store.engine.connect() as conn:
            rows = list(conn.execute(query))
        taken: list[tuple[str, str]] = []
        for name, kind, runner, owner, lease in rows:
            if name in self._handles:
                continue  # ours and still running here (a renewal was late): not an orphan
            whose = f"replica {owner}" if owner else "a replica from before job leases"
            since = f", lease expired {lease:%Y-%m-%d %H:%M:%S}" if lease is not None else ""
            if runner == "local":
                with self.store.engine.begin() as conn:
                    done = conn.execute(
                        t.update()
                        .where(t.c.name == name, t.c.state.in_(UNFINISHED), self._expired(now))
                        .values(
                            state=JobState.JOB_STATE_FAILED,
                            error_code=code_pb2.ABORTED,
                            error_message=(
                                f"interrupted: {whose} stopped before the job finished; submit it again"
                            ),
                            update_time=now,
                        )
                    ).rowcount
                if done:
                    log.warning("job %s (%s) of %s%s: marked failed (ABORTED)", name, kind, whose, since)
                    taken.append((name, runner))
            elif runner in self._adopters and self.claim(name, now):
                log.warning("job %s (%s) of %s%s: adopted by %s", name, kind, whose, since, self.owner)
                self._adopters[runner](name, kind)
                taken.append((name, runner))
        return taken

    def claim(self, name: str, now: datetime | None = None) -> bool:
        """Take an unfinished operation whose lease expired; True when this replica now owns it."""
        t = operations_table
        now = now or utcnow()
        with self.store.engine.begin() as conn:
            return bool(
                conn.execute(
                    t.update()
                    .where(t.c.name == name, t.c.state.in_(UNFINISHED), self._expired(now))
                    .values(owner=self.owner, lease_expire_time=self._lease_until())
                ).rowcount
            )

    def adopt(self, runner: str, adopter: Adopter) -> list[str]:
        """From now on, operations of ``runner`` whose owner died are claimed by this replica and
        given to ``adopter(name, kind)`` (which attaches a watcher); returns those adopted now."""
        self._adopters[runner] = adopter
        return [name for name, by in self.reclaim() if by == runner]

    def _beat(self) -> None:
        """Renew the leases of this replica's jobs, pass on cancels set through other replicas,
        and sweep for orphans; a database outage only delays this (logged, retried)."""
        poll = min(CANCEL_POLL_S, self.lease_s / 4)
        next_renew = next_sweep = 0.0
        while not self._closing.wait(poll):
            now = time.monotonic()
            try:
                if self._handles:
                    self._poll_cancels()
                if now >= next_renew:
                    self._renew()
                    next_renew = now + self.lease_s / 3
                if now >= next_sweep:
                    self.reclaim()
                    next_sweep = now + self.lease_s / 2
            except Exception as exc:  # the database is down or busy: try again next tick
                log.warning("job lease heartbeat of %s failed: %s", self.owner, exc)

    def _renew(self) -> None:
        names = list(self._handles)
        if not names:
            return
        t = operations_table
        with self.store.engine.begin() as conn:
            conn.execute(
                t.update()
                .where(t.c.owner == self.owner, t.c.name.in_(names), t.c.state.in_(UNFINISHED))
                .values(lease_expire_time=self._lease_until())
            )
            mine = set(
                conn.scalars(
                    sa.select(t.c.name).where(
                        t.c.owner == self.owner, t.c.name.in_(names), t.c.state.in_(UNFINISHED)
                    )
                )
            )
        for name in names:
            handle = self._handles.get(name)
            if handle is None or handle._finished or name in mine or handle.cancellation.cancelled:
                continue
            log.error("job %s: %s; stopping it here", name, LOST_LEASE_REASON)
            handle.cancellation.cancel(LOST_LEASE_REASON)

    def _poll_cancels(self) -> None:
        t = operations_table
        names = list(self._handles)
        with self.store.engine.connect() as conn:
            flagged = list(
                conn.scalars(
                    sa.select(t.c.name).where(
                        t.c.owner == self.owner, t.c.name.in_(names), t.c.cancel_requested.is_(True)
                    )
                )
            )
        for name in flagged:
            handle = self._handles.get(name)
            if handle is not None and not handle.cancellation.cancelled:
                handle.cancellation.cancel("cancelled by request")

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
                    owner=self.owner,
                    lease_expire_time=self._lease_until(),
                )
            )
        handle = JobHandle(name=name, manager=self)
        self._handles[name] = handle
        self._pool.submit(self._run, handle, kind, fn)
        return name

    def attach(self, name: str, kind: str, fn: JobFunction) -> None:
        """Run fn for an existing, unfinished operation this replica owns (see claim(): resuming a
        job that runs elsewhere)."""
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
            self._release(handle.name)
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
        handle = self._handles.get(name)
        if handle is not None:
            handle._finished = True
        if state == JobState.JOB_STATE_CANCELLED and error == LOST_LEASE_REASON:
            return  # the row belongs to whoever took the job over; write nothing
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
                t = operations_table
                with self.store.engine.begin() as conn:
                    # Only the owner writes, and never over a finished row: a replica whose job was
                    # failed after its lease lapsed must not bring it back to RUNNING.
                    written = conn.execute(
                        t.update()
                        .where(t.c.name == name, t.c.owner == self.owner, t.c.state.in_(UNFINISHED))
                        .values(**self._live[name])
                    ).rowcount
                if not written:
                    self._live.pop(name, None)
                    handle = self._handles.get(name)
                    if handle is not None and not handle.cancellation.cancelled:
                        log.error("job %s: %s; its update was not written", name, LOST_LEASE_REASON)
                        handle.cancellation.cancel(LOST_LEASE_REASON)
                elif values.get("state") in TERMINAL:
                    self._live.pop(name, None)
            self._changed.notify_all()

    def _release(self, name: str) -> None:
        """Let the lease of a job whose work goes on elsewhere lapse now, so the next replica adopts
        it at once instead of a lease later."""
        t = operations_table
        with self.store.engine.begin() as conn:
            conn.execute(
                t.update().where(t.c.name == name, t.c.owner == self.owner).values(lease_expire_time=utcnow())
            )

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
        """Cancel through any replica: the flag is in the row and the owner honours it within a
        second; a local job whose owner died is recorded as cancelled here and now."""
        row = self._row(name, current_tenant())
        if row["state"] in TERMINAL:
            return  # AIP-151: cancelling a finished operation is not an error
        t = operations_table
        now = utcnow()
        with self.store.engine.begin() as conn:
            conn.execute(t.update().where(t.c.name == name).values(cancel_requested=True, update_time=now))
            if row["runner"] == "local" and name not in self._handles:
                orphan = conn.execute(
                    t.update()
                    .where(t.c.name == name, t.c.state.in_(UNFINISHED), self._expired(now))
                    .values(
                        state=JobState.JOB_STATE_CANCELLED,
                        error_code=code_pb2.CANCELLED,
                        error_message="cancelled by request (its replica had stopped)",
                    )
                ).rowcount
                if orphan:
                    log.info("job %s: cancelled; its owner %s had stopped", name, row["owner"])
        handle = self._handles.get(name)
        if handle is not None:
            handle.cancellation.cancel("cancelled by request")
        with self._changed:
            self._changed.notify_all()

    def delete(self, name: str) -> None:
        row = self._row(name, current_tenant())
        if row["state"] not in TERMINAL:
            raise FailedPreconditionError(f"operation {name!r} is still running; cancel it first")
        with self.store.engine.begin() as conn:
            conn.execute(operations_table.delete().where(operations_table.c.name == name))

    def shutdown(self, wait_s: float, join_s: float | None = None) -> bool:
        """Give running jobs wait_s to finish, then cancel them and wait join_s (None: for ever)
        for them to end; True when none is left running. The heartbeat stops adopting at once and
        renewing once the jobs here have ended (or join_s has passed)."""
        self._adopters.clear()
        deadline = time.monotonic() + wait_s
        while self._handles and time.monotonic() < deadline:
            time.sleep(0.1)
        for handle in list(self._handles.values()):
            handle.cancellation.cancel(SHUTDOWN_REASON)
        # Not wait=True: a job that ignores its cancellation must not hold the process (see
        # runtime.shutdown); its thread is abandoned with the process.
        self._pool.shutdown(wait=join_s is None, cancel_futures=True)
        end = time.monotonic() + (join_s or 0.0)
        while self._handles and time.monotonic() < end:
            time.sleep(0.05)
        # The heartbeat renews the leases of jobs still here; it ends now (their leases then lapse
        # and another replica fails or adopts them).
        self._closing.set()
        self._heartbeat.join(timeout=min(5.0, join_s or 5.0))
        return not self._handles

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
