"""JobManager on SQLite and PostgreSQL."""

from __future__ import annotations

import time

import pytest
from google.protobuf import wrappers_pb2

from atelier.common.v1 import progress_pb2
from atelier.runtime.errors import FailedPreconditionError, NotFoundError
from atelier.runtime.jobs import JobHandle, JobManager
from atelier.runtime.storage import Store


def _state(op: object) -> int:
    meta = progress_pb2.OperationMetadata()
    op.metadata.Unpack(meta)  # type: ignore[attr-defined]
    return meta.progress.state


def test_job_lifecycle(store: Store) -> None:
    jobs = JobManager(store, "test", workers=1)
    seen: list[float] = []

    def work(job: JobHandle) -> wrappers_pb2.Int64Value:
        for i in range(4):
            job.progress((i + 1) / 4, f"step {i}", i + 1, 4, partial=wrappers_pb2.Int64Value(value=i))
            seen.append((i + 1) / 4)
        return wrappers_pb2.Int64Value(value=42)

    name = jobs.submit("demo", work)
    op = jobs.wait(name, timeout_s=10)
    assert op.done and _state(op) == progress_pb2.JOB_STATE_SUCCEEDED
    result = wrappers_pb2.Int64Value()
    assert op.response.Unpack(result) and result.value == 42
    assert seen == [0.25, 0.5, 0.75, 1.0]
    partial = jobs.partial(name)
    assert partial is not None
    ops, token = jobs.list(page_size=10)
    assert [o.name for o in ops] == [name] and token == ""
    jobs.delete(name)
    with pytest.raises(NotFoundError):
        jobs.get(name)
    jobs.shutdown(wait_s=1)


def test_cancel_running_job_and_refuse_delete(store: Store) -> None:
    jobs = JobManager(store, "test", workers=1)

    def forever(job: JobHandle) -> wrappers_pb2.Int64Value:
        while True:
            job.progress(0.5, "spinning")
            time.sleep(0.01)

    name = jobs.submit("spin", forever)
    time.sleep(0.1)
    with pytest.raises(FailedPreconditionError):
        jobs.delete(name)
    jobs.cancel(name)
    op = jobs.wait(name, timeout_s=10)
    assert _state(op) == progress_pb2.JOB_STATE_CANCELLED
    jobs.cancel(name)  # cancelling a finished job is not an error
    jobs.shutdown(wait_s=1)


def test_paging(store: Store) -> None:
    jobs = JobManager(store, "test", workers=2)
    names = {jobs.submit("n", lambda job: wrappers_pb2.Int64Value(value=1)) for _ in range(5)}
    for name in names:
        jobs.wait(name, 10)
    first, token = jobs.list(page_size=2)
    second, token2 = jobs.list(page_size=2, page_token=token)
    third, token3 = jobs.list(page_size=2, page_token=token2)
    assert len(first) == 2 and len(second) == 2 and len(third) == 1 and token3 == ""
    assert {o.name for o in first + second + third} == names
    jobs.shutdown(wait_s=1)
