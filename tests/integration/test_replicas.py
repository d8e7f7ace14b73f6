"""State across replicas: two servers of one service on one PostgreSQL database of their own.

What a service trains is an artefact (the database, or S3 on moto's server), so it is served by
every replica and by pods restarted on fresh data directories; jobs are owned by one replica under
a lease, so a second replica neither fails nor loses them, and a cancel reaches the owner.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import sqlalchemy as sa
from google.longrunning import operations_pb2, operations_pb2_grpc

from atelier.common.v1 import progress_pb2
from atelier.inspection.server import build as inspection_build
from atelier.inspection.v1 import inspection_pb2 as ipb
from atelier.inspection.v1 import inspection_pb2_grpc
from atelier.recommendations.server import build as recommendations_build
from atelier.recommendations.simulate import simulate
from atelier.recommendations.v1 import recommendations_pb2 as rpb
from atelier.runtime.server import Server
from tests.inspection.test_service import image, png, synthetic_profile, weave
from tests.recommendations.helpers import Client, event, item


@pytest.fixture(params=["database", "s3"])
def artefacts(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """Where the replicas keep artefacts: the shared database, or a bucket on moto's S3 server."""
    if request.param == "s3":
        bucket = request.getfixturevalue("s3_bucket")
        monkeypatch.setenv("ATELIER_ARTEFACTS_URL", f"s3://{bucket['bucket']}/atelier")
        monkeypatch.setenv("ATELIER_S3_ENDPOINT_URL", bucket["endpoint"])
        yield f"s3:{bucket['bucket']}"
    else:
        monkeypatch.delenv("ATELIER_ARTEFACTS_URL", raising=False)
        yield "database"


def _stored_keys(where: str, database_url: str, endpoint: str = "") -> list[str]:
    if where.startswith("s3:"):
        import boto3

        listed = boto3.client("s3", endpoint_url=endpoint).list_objects_v2(Bucket=where[3:])
        return [o["Key"] for o in listed.get("Contents", [])]
    engine = sa.create_engine(database_url.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.connect() as conn:
        keys = list(conn.scalars(sa.text("SELECT key FROM atelier_artefacts")))
    engine.dispose()
    return keys


def _no_artefact_files(data_dir: Path) -> None:
    files = [p for p in data_dir.rglob("*") if p.is_file() and not p.name.startswith("inspection.db")]
    assert not [p for p in files if p.suffix in (".npz", ".tmp")], files


def test_inspection_profile_is_served_by_every_replica_and_after_restarts_on_fresh_data_dirs(
    start_server: Callable[..., Server],
    postgres_database: str,
    artefacts: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def replica(name: str) -> inspection_pb2_grpc.InspectionServiceStub:
        server = start_server(
            "inspection", inspection_build, database_url=postgres_database, data_dir=tmp_path / name
        )
        servers.append(server)
        return inspection_pb2_grpc.InspectionServiceStub(grpc.insecure_channel(f"127.0.0.1:{server.port}"))

    servers: list[Server] = []
    probe = ipb.InspectImageRequest(article="plain-1", image=image(png(weave(128, 512, 99))))
    a, b = replica("a"), replica("b")
    assert synthetic_profile(a).version == 1  # trained on a
    served = a.InspectImage(probe)
    assert b.InspectImage(probe) == served and served.profile_version == 1  # served by b
    # A new version trained on b reaches a (each replica loads the version it lacks).
    goods = [image(png(weave(128, 512, s))) for s in range(10, 14)]
    assert b.CreateProfile(ipb.CreateProfileRequest(article="plain-1", good_images=goods)).version == 2
    newer = a.InspectImage(probe)
    assert newer.profile_version == 2 and b.InspectImage(probe) == newer
    for server in servers:
        server.stop(grace_s=1)
        _no_artefact_files(Path(server.config.data_dir))
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")
    # Both pods restart on fresh (empty) data directories: the same profile, the same answers.
    c, d = replica("c"), replica("d")
    assert c.InspectImage(probe) == newer and d.InspectImage(probe) == newer
    keys = _stored_keys(artefacts, postgres_database, _endpoint())
    assert len(keys) == 2 and all("inspection/profiles/" in k for k in keys)


def _endpoint() -> str:
    import os

    return os.environ.get("ATELIER_S3_ENDPOINT_URL", "")


def _load_shop(client: Client) -> list[str]:
    shop = simulate(n_users=120, n_items=50, n_clusters=3, interactions_per_user=8, seed=5)
    client.UpsertItems(
        rpb.UpsertItemsRequest(
            items=[item(it.item_id, it.category, it.style, tuple(it.colours), it.price) for it in shop.items]
        )
    )
    events = []
    for k in range(len(shop.events)):
        e = rpb.Event(
            event_id=str(shop.event_ids[k]),
            user_id=str(shop.events.user_ids[k]),
            item_id=str(shop.events.item_ids[k]),
            type=int(shop.events.types[k]),
        )
        e.time.FromNanoseconds(int(shop.events.times_s[k] * 1e9))
        events.append(e)
    client.RecordEvents(rpb.RecordEventsRequest(events=events))
    return [it.item_id for it in shop.items]


def _recommend(client: Client, user: str = "u7") -> tuple[int, list[str]]:
    reply = client.Recommend(rpb.RecommendRequest(user_id=user, n=10))
    return reply.model_version, [r.item_id for r in reply.recommendations]


def test_recommendation_model_trained_on_one_replica_swaps_in_on_the_other_and_survives_restarts(
    start_server: Callable[..., Server], postgres_database: str, artefacts: str, tmp_path: Path
) -> None:
    def replica(name: str) -> Client:
        server = start_server(
            "recommendations", recommendations_build, database_url=postgres_database, data_dir=tmp_path / name
        )
        servers.append(server)
        return Client(server.port)

    servers: list[Server] = []
    a, b = replica("a"), replica("b")
    items = _load_shop(a)
    assert _recommend(b)[0] == 0  # b serves popularity until there is a model
    assert a.train(factors=8, iterations=5).version == 1
    trained = _recommend(a)
    assert trained[0] == 1
    deadline = time.monotonic() + 10
    while _recommend(b)[0] != 1 and time.monotonic() < deadline:
        time.sleep(0.2)  # b looks for a newly activated version every 2 s (hot swap)
    assert _recommend(b) == trained
    # A new shopper's events recorded through a reach b's serving state too.
    newbie = [event(f"n{k}", "newbie", items[k], rpb.EVENT_TYPE_PURCHASE, minutes=k) for k in range(3)]
    a.RecordEvents(rpb.RecordEventsRequest(events=newbie))
    assert not a.Recommend(rpb.RecommendRequest(user_id="newbie", n=5)).cold_start
    deadline = time.monotonic() + 10
    while b.Recommend(rpb.RecommendRequest(user_id="newbie", n=5)).cold_start and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not b.Recommend(rpb.RecommendRequest(user_id="newbie", n=5)).cold_start
    for server in servers:
        server.stop(grace_s=1)
        _no_artefact_files(Path(server.config.data_dir))
    shutil.rmtree(tmp_path / "a")
    shutil.rmtree(tmp_path / "b")
    c, d = replica("c"), replica("d")
    assert _recommend(c) == trained and _recommend(d) == trained
    keys = _stored_keys(artefacts, postgres_database, _endpoint())
    assert len(keys) == 1 and "recommendations/models/" in keys[0]


# -- jobs across two server processes ------------------------------------------------------------


def _echo() -> Any:
    import echo_pb2  # type: ignore[import-not-found]
    import echo_pb2_grpc  # type: ignore[import-not-found]

    return echo_pb2, echo_pb2_grpc


def _state(op: operations_pb2.Operation) -> int:
    meta = progress_pb2.OperationMetadata()
    op.metadata.Unpack(meta)
    return meta.progress.state


def test_jobs_across_replicas_start_cancel_and_kill(
    service_process: Callable[..., tuple[subprocess.Popen[bytes], int, int]],
    postgres_database: str,
    tmp_path: Path,
) -> None:
    pb2, pb2_grpc = _echo()
    lease_s = 2.0
    env = {"ATELIER_DATABASE_URL": postgres_database, "ATELIER_JOB_LEASE_SECONDS": str(lease_s)}
    proc_a, port_a, _ = service_process(
        "echo", spec="echo_service:build", env={**env, "ATELIER_DATA_DIR": str(tmp_path / "a")}
    )
    echo_a = pb2_grpc.EchoServiceStub(grpc.insecure_channel(f"127.0.0.1:{port_a}"))

    # 1. A second replica starts while the first runs a job (longer than the lease): untouched.
    first = echo_a.StartJob(pb2.StartJobRequest(steps=100, step_s=0.05))
    proc_b, port_b, _ = service_process(
        "echo", spec="echo_service:build", env={**env, "ATELIER_DATA_DIR": str(tmp_path / "b")}
    )
    echo_b = pb2_grpc.EchoServiceStub(grpc.insecure_channel(f"127.0.0.1:{port_b}"))
    ops_b = operations_pb2_grpc.OperationsStub(grpc.insecure_channel(f"127.0.0.1:{port_b}"))
    assert _state(ops_b.GetOperation(operations_pb2.GetOperationRequest(name=first.name))) in (
        progress_pb2.JOB_STATE_RUNNING,
        progress_pb2.JOB_STATE_QUEUED,
    )
    done = ops_b.WaitOperation(operations_pb2.WaitOperationRequest(name=first.name, timeout={"seconds": 20}))
    assert done.done and _state(done) == progress_pb2.JOB_STATE_SUCCEEDED, done.error
    result = pb2.CountResponse()
    assert done.response.Unpack(result) and result.value == 100

    # 2. Cancel through the other replica: the owner stops the job within a second.
    spinning = echo_a.StartJob(pb2.StartJobRequest(steps=10_000, step_s=0.05))
    time.sleep(0.5)
    started = time.monotonic()
    ops_b.CancelOperation(operations_pb2.CancelOperationRequest(name=spinning.name))
    while True:
        op = ops_b.GetOperation(operations_pb2.GetOperationRequest(name=spinning.name))
        if op.done or time.monotonic() - started > 5:
            break
        time.sleep(0.05)
    took = time.monotonic() - started
    assert op.done and _state(op) == progress_pb2.JOB_STATE_CANCELLED, op
    assert took < 1.0, f"the owner stopped the job {took:.2f} s after the cancel"

    # 3. kill -9 the owner: the job is failed once its lease expired, never left running.
    orphan = echo_b.StartJob(pb2.StartJobRequest(steps=10_000, step_s=0.05))  # owned by b this time
    time.sleep(0.5)
    proc_b.send_signal(signal.SIGKILL)
    proc_b.wait()
    killed = time.monotonic()
    ops_a = operations_pb2_grpc.OperationsStub(grpc.insecure_channel(f"127.0.0.1:{port_a}"))
    while True:
        op = ops_a.GetOperation(operations_pb2.GetOperationRequest(name=orphan.name))
        if op.done or time.monotonic() - killed > 4 * lease_s:
            break
        time.sleep(0.1)
    assert op.done and _state(op) == progress_pb2.JOB_STATE_FAILED, op
    assert op.error.code == grpc.StatusCode.ABORTED.value[0] and "submit it again" in op.error.message
    assert time.monotonic() - killed <= lease_s + 2.0
    proc_a.send_signal(signal.SIGTERM)
    output = proc_a.communicate(timeout=20)[0].decode(errors="replace")
    # a said which job it failed and whose it was; it never touched the jobs of the live replica.
    assert orphan.name in output and "lease expired" in output, output
    assert first.name not in output and spinning.name not in output
