"""atelier.runtime.kube: the Job spec builder, the Kubernetes runner against a fake BatchV1Api
(no cluster here), the subprocess runner for real, and the status of both read back into the
operation through the JobManager."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import struct_pb2
from google.rpc import code_pb2
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from atelier.common.v1 import progress_pb2
from atelier.runtime import kube
from atelier.runtime.config import ServiceConfig
from atelier.runtime.jobs import JobManager
from atelier.runtime.storage import Store

REPO = Path(__file__).resolve().parents[2]
OPERATION = "operations/recommendations/0123456789abcdef0123456789abcdef"
SETTINGS = kube.ClusterSettings(
    namespace="shop",
    image="registry.example.com/atelier/atelier:0.1.0",
    service_account="atelier-job",
    backoff_limit=2,
    ttl_seconds_after_finished=600,
    active_deadline_seconds=7200,
    database_secret="atelier-database",
    node_selector={"node-pool": "batch"},
    tolerations=[{"key": "batch", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}],
)
TASK = kube.Task(
    module="atelier.recommendations.train",
    args=("--factors", "64"),
    env={"ATELIER_LOG_FORMAT": "json"},
    requests={"cpu": "4", "memory": "8Gi"},
    limits={"memory": "16Gi"},
)


def build(task: kube.Task = TASK, settings: kube.ClusterSettings = SETTINGS) -> dict[str, Any]:
    job = kube.build_job(
        task,
        settings,
        name=kube.job_name("recommendations", OPERATION),
        service="recommendations",
        kind="train_model",
        operation=OPERATION,
    )
    manifest: dict[str, Any] = client.ApiClient().sanitize_for_serialization(job)
    return manifest


# -- the Job spec -----------------------------------------------------------------------------


def test_job_name_is_stable_and_a_dns_label() -> None:
    name = kube.job_name("recommendations", OPERATION)
    assert name == "atelier-recommendations-0123456789abcdef0123"
    assert len(name) <= 63
    assert kube.job_name("recommendations", OPERATION) == name


def test_job_spec_runs_the_task_as_built() -> None:
    job = build()
    assert job["apiVersion"] == "batch/v1" and job["kind"] == "Job"
    assert job["metadata"]["namespace"] == "shop"
    assert job["metadata"]["annotations"] == {"atelier.dev/operation": OPERATION}
    labels = job["metadata"]["labels"]
    assert labels["atelier.dev/service"] == "recommendations"
    assert labels["atelier.dev/kind"] == "train_model"
    assert labels["app.kubernetes.io/part-of"] == "atelier"
    spec = job["spec"]
    assert spec["backoffLimit"] == 2
    assert spec["ttlSecondsAfterFinished"] == 600
    assert spec["activeDeadlineSeconds"] == 7200
    pod = spec["template"]["spec"]
    assert spec["template"]["metadata"]["labels"] == labels
    assert pod["restartPolicy"] == "Never"
    assert pod["serviceAccountName"] == "atelier-job"
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["nodeSelector"] == {"node-pool": "batch"}
    assert pod["tolerations"] == [
        {"key": "batch", "operator": "Exists", "effect": "NoSchedule", "tolerationSeconds": 60}
    ]
    (container,) = pod["containers"]
    assert container["image"] == "registry.example.com/atelier/atelier:0.1.0"
    assert container["command"] == ["python", "-m", "atelier.recommendations.train", "--factors", "64"]
    env = {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}
    assert env["ATELIER_OPERATION"] == OPERATION
    assert env["ATELIER_LOG_FORMAT"] == "json"
    assert env["ATELIER_DATABASE_URL"] == {"secretKeyRef": {"name": "atelier-database", "key": "url"}}
    assert container["resources"] == {"requests": {"cpu": "4", "memory": "8Gi"}, "limits": {"memory": "16Gi"}}
    assert container["securityContext"]["readOnlyRootFilesystem"] is True


def test_gpu_task_and_default_resources() -> None:
    job = build(kube.Task(module="atelier.generation.batch", gpus=1))
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "1"}
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "2Gi"}


def test_job_spec_validates_against_the_kubernetes_schema() -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate")
    kubernetes_validate.validate(build(), "1.33", strict=True)
    kubernetes_validate.validate(build(kube.Task(module="m", gpus=2)), "1.33", strict=True)


def test_settings_from_the_environment_the_chart_sets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ATELIER_JOB_NAMESPACE", "shop")
    monkeypatch.setenv("ATELIER_JOB_IMAGE", "img:1")
    monkeypatch.setenv("ATELIER_JOB_SERVICE_ACCOUNT", "atelier-job")
    monkeypatch.setenv("ATELIER_RECOMMENDATIONS_JOB_BACKOFF_LIMIT", "3")
    monkeypatch.setenv("ATELIER_JOB_TTL_SECONDS", "60")
    monkeypatch.setenv("ATELIER_JOB_DEADLINE_SECONDS", "0")
    monkeypatch.setenv("ATELIER_JOB_RESOURCES", '{"requests": {"cpu": 2}, "limits": {"memory": "4Gi"}}')
    monkeypatch.setenv("ATELIER_JOB_DATABASE_SECRET", "db")
    settings = kube.cluster_settings_from_config(ServiceConfig(service="recommendations"))
    assert settings.namespace == "shop" and settings.image == "img:1"
    assert settings.service_account == "atelier-job"
    assert settings.backoff_limit == 3
    assert settings.ttl_seconds_after_finished == 60
    assert settings.active_deadline_seconds is None
    assert dict(settings.requests) == {"cpu": "2"} and dict(settings.limits) == {"memory": "4Gi"}
    assert settings.database_secret == "db"


def test_runner_from_config(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = ServiceConfig(service="nesting", data_dir=tmp_path)
    assert isinstance(kube.runner_from_config(config), kube.SubprocessRunner)
    monkeypatch.setenv("ATELIER_JOB_RUNNER", "kubernetes")
    # In a pod the ServiceAccount token is loaded; here pretend it was, no cluster is contacted.
    monkeypatch.setattr("kubernetes.config.load_incluster_config", lambda: None)
    runner = kube.runner_from_config(config)
    assert isinstance(runner, kube.KubernetesRunner)
    assert isinstance(runner.batch, client.BatchV1Api)
    monkeypatch.setenv("ATELIER_JOB_RUNNER", "slurm")
    with pytest.raises(ValueError, match="local or kubernetes"):
        kube.runner_from_config(config)


# -- the Kubernetes runner against a fake API ------------------------------------------------------


class FakeBatchApi:
    """Records calls; the Job's status follows a script of (active, succeeded, failed, condition)."""

    def __init__(self, script: list[tuple[int, str | None]] | None = None) -> None:
        self.created: list[tuple[str, Any]] = []
        self.deleted: list[tuple[str, str, Any]] = []
        self.reads = 0
        self.script = list(script or [(0, None), (1, None), (0, "Complete")])
        self.lock = threading.Lock()
        self.exists = False

    def create_namespaced_job(self, namespace: str, body: Any) -> Any:
        with self.lock:
            if self.exists:
                raise ApiException(status=409, reason="AlreadyExists")
            self.exists = True
            self.created.append((namespace, body))
            return body

    def read_namespaced_job_status(self, name: str, namespace: str) -> Any:
        with self.lock:
            if not self.exists:
                raise ApiException(status=404, reason="NotFound")
            step = self.script[min(self.reads, len(self.script) - 1)]
            self.reads += 1
        active, condition = step
        conditions = None
        if condition == "Complete":
            conditions = [client.V1JobCondition(type="Complete", status="True")]
        elif condition is not None:
            conditions = [
                client.V1JobCondition(
                    type="Failed",
                    status="True",
                    reason=condition,
                    message="Job has reached the specified backoff limit",
                )
            ]
        return client.V1Job(
            metadata=client.V1ObjectMeta(name=name, namespace=namespace),
            status=client.V1JobStatus(
                active=active or None,
                conditions=conditions,
                failed=2 if condition not in (None, "Complete") else None,
            ),
        )

    def delete_namespaced_job(self, name: str, namespace: str, body: Any) -> Any:
        with self.lock:
            self.deleted.append((name, namespace, body))
            self.exists = False


class FakeCoreApi:
    def list_namespaced_pod(self, namespace: str, label_selector: str) -> Any:
        assert label_selector.startswith("job-name=atelier-")
        pod = client.V1Pod(metadata=client.V1ObjectMeta(name="train-abc", creation_timestamp=None))
        return client.V1PodList(items=[pod])

    def read_namespaced_pod_log(self, name: str, namespace: str, tail_lines: int) -> str:
        return "loading interactions\nTraceback (most recent call last)\nMemoryError: out of memory\n"


def test_runner_creates_the_job_and_maps_its_status() -> None:
    api = FakeBatchApi([(0, None), (1, None), (0, "Complete")])
    runner = kube.KubernetesRunner(SETTINGS, batch_api=api)
    name = kube.job_name("recommendations", OPERATION)
    runner.start(TASK, name=name, service="recommendations", kind="train_model", operation=OPERATION)
    namespace, body = api.created[0]
    assert namespace == "shop" and body.metadata.name == name
    states = [runner.status(name).state for _ in range(3)]
    assert states == [
        progress_pb2.JOB_STATE_QUEUED,
        progress_pb2.JOB_STATE_RUNNING,
        progress_pb2.JOB_STATE_SUCCEEDED,
    ]
    # Starting again (a resumed watcher) is not an error: 409 means the Job is there.
    runner.start(TASK, name=name, service="recommendations", kind="train_model", operation=OPERATION)
    assert len(api.created) == 1


def test_failed_job_reports_reason_and_log_tail() -> None:
    api = FakeBatchApi([(0, "BackoffLimitExceeded")])
    runner = kube.KubernetesRunner(SETTINGS, batch_api=api, core_api=FakeCoreApi())
    name = kube.job_name("recommendations", OPERATION)
    runner.start(TASK, name=name, service="recommendations", kind="train_model", operation=OPERATION)
    status = runner.status(name)
    assert status.state == progress_pb2.JOB_STATE_FAILED
    assert status.reason == "BackoffLimitExceeded"
    assert "MemoryError: out of memory" in status.message


def test_missing_job_is_failed_and_other_api_errors_propagate() -> None:
    api = FakeBatchApi()
    runner = kube.KubernetesRunner(SETTINGS, batch_api=api)
    assert runner.status("atelier-nesting-gone").state == progress_pb2.JOB_STATE_FAILED
    runner.stop("atelier-nesting-gone")  # deleting a missing Job is fine

    class Forbidden(FakeBatchApi):
        def create_namespaced_job(self, namespace: str, body: Any) -> Any:
            raise ApiException(status=403, reason="Forbidden")

    with pytest.raises(ApiException):
        kube.KubernetesRunner(SETTINGS, batch_api=Forbidden()).start(
            TASK, name="atelier-x-1", service="x", kind="k", operation="operations/x/1"
        )


# -- through the JobManager: the operation mirrors the run ---------------------------------------


@pytest.fixture
def manager(tmp_path: Path) -> Any:
    store = Store(f"sqlite:///{tmp_path / 'jobs.db'}")
    managers: list[JobManager] = []

    def make(lease_s: float = 30.0) -> JobManager:
        m = JobManager(store, "recommendations", workers=2, lease_s=lease_s)
        managers.append(m)
        return m

    yield make
    for m in managers:
        m.shutdown(wait_s=0)
    store.dispose()


def metadata(op: Any) -> progress_pb2.OperationMetadata:
    meta = progress_pb2.OperationMetadata()
    op.metadata.Unpack(meta)
    return meta


def test_operation_follows_the_kubernetes_job_to_success(manager: Any) -> None:
    jobs = manager()
    api = FakeBatchApi([(0, None), (1, None), (1, None), (0, "Complete")])
    runner = kube.KubernetesRunner(SETTINGS, batch_api=api)
    name = kube.submit(jobs, "train_model", TASK, runner, poll_interval_s=0.05)
    op = jobs.wait(name, timeout_s=10)
    assert op.done and not op.HasField("error")
    assert metadata(op).runner == "kubernetes"
    result = struct_pb2.Struct()
    op.response.Unpack(result)
    assert result["run"] == kube.job_name("recommendations", name)
    assert result["runner"] == "kubernetes"
    ((namespace, body),) = api.created
    assert namespace == "shop"
    assert body.metadata.annotations[kube.OPERATION_ANNOTATION] == name
    assert api.reads == 4
    assert api.deleted == []


def test_operation_reports_a_failed_job_as_aborted(manager: Any) -> None:
    jobs = manager()
    runner = kube.KubernetesRunner(
        SETTINGS, batch_api=FakeBatchApi([(1, None), (0, "BackoffLimitExceeded")]), core_api=FakeCoreApi()
    )
    name = kube.submit(jobs, "train_model", TASK, runner, poll_interval_s=0.05)
    op = jobs.wait(name, timeout_s=10)
    assert op.done
    assert op.error.code == code_pb2.ABORTED
    assert "BackoffLimitExceeded" in op.error.message and "MemoryError" in op.error.message


def test_cancelling_the_operation_deletes_the_job(manager: Any) -> None:
    jobs = manager()
    api = FakeBatchApi([(1, None)])  # runs forever
    runner = kube.KubernetesRunner(SETTINGS, batch_api=api)
    name = kube.submit(jobs, "train_model", TASK, runner, poll_interval_s=0.05)
    deadline = time.monotonic() + 5
    while api.reads < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    jobs.cancel(name)
    op = jobs.wait(name, timeout_s=10)
    assert op.done and op.error.code == code_pb2.CANCELLED
    ((deleted, namespace, options),) = api.deleted
    assert deleted == kube.job_name("recommendations", name) and namespace == "shop"
    assert options.propagation_policy == "Background"


def test_job_survives_a_service_restart_and_is_resumed(manager: Any) -> None:
    first = manager()
    api = FakeBatchApi([(1, None)])
    runner = kube.KubernetesRunner(SETTINGS, batch_api=api)
    name = kube.submit(first, "train_model", TASK, runner, poll_interval_s=0.05)
    deadline = time.monotonic() + 5
    while api.reads < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    first.shutdown(wait_s=0)  # the service pod stops (rolling update): the Job must go on
    assert api.deleted == []
    second = manager()  # the next process of the service
    op = second.get(name)
    assert not op.done  # not marked interrupted, unlike a local job
    assert metadata(op).progress.state == progress_pb2.JOB_STATE_RUNNING
    api.script = [(0, "Complete")]
    assert kube.resume(second, runner, poll_interval_s=0.05) == [name]
    op = second.wait(name, timeout_s=10)
    assert op.done and not op.HasField("error")
    assert len(api.created) == 1  # watched again, not created twice


def test_a_live_replica_adopts_the_run_of_a_replica_that_died(manager: Any) -> None:
    """Replica b already runs when a dies (no clean stop): b takes the watch over once a's lease
    expired, and the Job is watched to its end, not created again nor failed."""
    a, b = manager(lease_s=0.6), manager(lease_s=0.6)
    api = FakeBatchApi([(1, None)])
    runner = kube.KubernetesRunner(SETTINGS, batch_api=api)
    assert kube.resume(b, runner, poll_interval_s=0.05) == []  # nothing orphaned yet
    name = kube.submit(a, "train_model", TASK, runner, poll_interval_s=0.05)
    deadline = time.monotonic() + 5
    while api.reads < 1 and time.monotonic() < deadline:
        time.sleep(0.02)
    a._closing.set()  # a's heartbeat stops, as when its pod is killed
    a._heartbeat.join()
    time.sleep(1.5)  # a's lease lapses; b's sweep adopts the run
    assert name in b._handles
    api.script = [(0, "Complete")]
    op = b.wait(name, timeout_s=10)
    assert op.done and not op.HasField("error"), op.error
    # a, awake again, found its writes refused and let go without deleting b's Job.
    assert name not in a._handles and len(api.created) == 1 and api.deleted == []


# -- the subprocess runner, for real -----------------------------------------------------------------


@pytest.fixture
def local_runner(tmp_path: Path) -> kube.SubprocessRunner:
    env = {"PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    return kube.SubprocessRunner(tmp_path / "logs", python=sys.executable, cwd=REPO, env=env)


def test_subprocess_success_runs_the_same_command(
    manager: Any, local_runner: kube.SubprocessRunner, tmp_path: Path
) -> None:
    jobs = manager()
    marker = tmp_path / "done.txt"
    task = kube.Task(module="tests.deploy.sample_task", args=("--touch", str(marker)))
    name = kube.submit(jobs, "train_model", task, local_runner, poll_interval_s=0.05)
    op = jobs.wait(name, timeout_s=30)
    assert op.done and not op.HasField("error"), op.error.message
    assert metadata(op).runner == "local"
    assert marker.read_text() == name  # the child saw its operation name


def test_subprocess_failure_reports_exit_code_and_log(
    manager: Any, local_runner: kube.SubprocessRunner
) -> None:
    jobs = manager()
    task = kube.Task(module="tests.deploy.sample_task", args=("--exit", "3"))
    name = kube.submit(jobs, "train_model", task, local_runner, poll_interval_s=0.05)
    op = jobs.wait(name, timeout_s=30)
    assert op.done and op.error.code == code_pb2.ABORTED
    assert "exited with code 3" in op.error.message
    assert "sample task exiting with 3" in op.error.message


def test_subprocess_cancel_terminates_the_process(manager: Any, local_runner: kube.SubprocessRunner) -> None:
    jobs = manager()
    task = kube.Task(module="tests.deploy.sample_task", args=("--sleep", "60"))
    name = kube.submit(jobs, "train_model", task, local_runner, poll_interval_s=0.05)
    run = kube.job_name("recommendations", name)
    deadline = time.monotonic() + 10
    while local_runner.status(run).state != progress_pb2.JOB_STATE_RUNNING and time.monotonic() < deadline:
        time.sleep(0.02)
    started = time.monotonic()
    jobs.cancel(name)
    op = jobs.wait(name, timeout_s=15)
    assert op.done and op.error.code == code_pb2.CANCELLED
    assert time.monotonic() - started < 10
    assert local_runner.status(run).state == progress_pb2.JOB_STATE_FAILED  # terminated, not finished


def test_the_chart_environment_configures_the_kubernetes_runner(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the chart sets on a job-creating service is what kube reads, end to end."""
    helm = pytest.importorskip("helm_python")
    values = yaml.safe_load((REPO / "deploy" / "values-gpu-production.yaml").read_text())
    # Artefacts in MinIO: a Job pod gets the bucket's credentials as the service does.
    values["artefacts"] = {"url": "s3://atelier/prod", "s3": {"existingSecret": "atelier-artefacts"}}
    manifests = helm.Chart.load(str(REPO / "charts" / "atelier")).render(
        values, name="atelier", namespace="shop"
    )
    deployment = next(
        d
        for d in yaml.safe_load_all(manifests["atelier/templates/deployment.yaml"])
        if d and d["metadata"]["name"] == "atelier-recommendations"
    )
    for item in deployment["spec"]["template"]["spec"]["containers"][0]["env"]:
        if "value" in item:
            monkeypatch.setenv(item["name"], item["value"])
        elif item["valueFrom"].get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            monkeypatch.setenv(item["name"], "shop")  # the downward API's answer
    monkeypatch.setattr("kubernetes.config.load_incluster_config", lambda: None)
    runner = kube.runner_from_config(
        ServiceConfig(service="recommendations", data_dir=Path("/var/lib/atelier"))
    )
    assert isinstance(runner, kube.KubernetesRunner)
    settings = runner.settings
    assert settings.namespace == "shop"
    assert settings.image == "registry.example.com/atelier/atelier:0.1.0"
    assert settings.service_account == "atelier-job"
    assert settings.active_deadline_seconds == 43200
    assert dict(settings.requests) == {"cpu": "4", "memory": "8Gi"}
    assert dict(settings.node_selector) == {"node-pool": "cpu-batch"}
    assert settings.database_secret == "atelier-database"
    assert settings.config_map == "atelier"
    assert settings.env_secret == "atelier-artefacts"
    job = client.ApiClient().sanitize_for_serialization(
        kube.build_job(
            TASK,
            settings,
            name="atelier-recommendations-1",
            service="recommendations",
            kind="train_model",
            operation="operations/recommendations/1",
        )
    )
    pod = job["spec"]["template"]["spec"]
    assert pod["containers"][0]["envFrom"] == [
        {"configMapRef": {"name": "atelier"}},
        {"secretRef": {"name": "atelier-artefacts"}},
    ]
    assert pod["nodeSelector"] == {"node-pool": "cpu-batch"}
    pytest.importorskip("kubernetes_validate").validate(job, "1.33", strict=True)


class FlakyBatchApi(FakeBatchApi):
    """The API server answers 503 for a while (a control-plane upgrade)."""

    def __init__(self, failures: int, script: list[tuple[int, str | None]]) -> None:
        super().__init__(script)
        self.failures = failures

    def read_namespaced_job_status(self, name: str, namespace: str) -> Any:
        if self.failures > 0:
            self.failures -= 1
            raise ApiException(status=503, reason="Service Unavailable")
        return super().read_namespaced_job_status(name, namespace)


def test_transient_api_errors_do_not_fail_the_operation(manager: Any) -> None:
    jobs = manager()
    api = FlakyBatchApi(3, [(1, None), (0, "Complete")])
    name = kube.submit(
        jobs, "train_model", TASK, kube.KubernetesRunner(SETTINGS, batch_api=api), poll_interval_s=0.02
    )
    op = jobs.wait(name, timeout_s=10)
    assert op.done and not op.HasField("error"), op.error.message


def test_a_lasting_api_outage_fails_the_operation(manager: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kube, "MAX_STATUS_ERRORS", 3)
    jobs = manager()
    api = FlakyBatchApi(100, [(1, None)])
    name = kube.submit(
        jobs, "train_model", TASK, kube.KubernetesRunner(SETTINGS, batch_api=api), poll_interval_s=0.02
    )
    op = jobs.wait(name, timeout_s=10)
    assert op.done and op.error.code == code_pb2.INTERNAL
    assert "Service Unavailable" in op.error.message
    assert api.failures == 97


def test_a_cancel_sent_to_another_replica_deletes_the_job(manager: Any) -> None:
    replica_a, replica_b = manager(), manager()  # two pods of the service on one database
    api = FakeBatchApi([(1, None)])
    name = kube.submit(
        replica_a, "train_model", TASK, kube.KubernetesRunner(SETTINGS, batch_api=api), poll_interval_s=0.05
    )
    deadline = time.monotonic() + 5
    while api.reads < 2 and time.monotonic() < deadline:
        time.sleep(0.02)
    replica_b.cancel(name)
    op = replica_a.wait(name, timeout_s=10)
    assert op.done and op.error.code == code_pb2.CANCELLED
    assert [d[0] for d in api.deleted] == [kube.job_name("recommendations", name)]
