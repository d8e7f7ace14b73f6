"""Long work as Kubernetes Jobs, with the same code path running a subprocess locally.

A service describes the work as a :class:`Task` (``python -m <module> <args>``, environment,
resources) and hands it to :func:`submit` with a runner. The caller gets a
``google.longrunning.Operation`` at once, exactly as with an in-process job; a watcher thread
in the service starts the work and reads its status back into the operation:

- :class:`KubernetesRunner` creates a ``batch/v1`` Job through the official ``kubernetes``
  client (``BatchV1Api``), polls its status (Complete / Failed conditions, active pods) and
  deletes it when the operation is cancelled. The Job outlives a restart of the service pod:
  its operation row stays RUNNING and :func:`resume` re-attaches a watcher on start.
- :class:`SubprocessRunner` runs the same command as a child process of the service, for
  ``make run``, tests and single machines.

``runner_from_config`` picks one from ``ATELIER_<SERVICE>_JOB_RUNNER`` (``local`` by default;
the Helm chart sets ``kubernetes`` with the namespace, image and service account to use).

Each watcher holds one of the JobManager's worker threads (ATELIER_JOB_WORKERS) while its run
lasts; polling is cheap, so a service that sends its work to the cluster can raise that number.

The operation row is owned by the replica watching it (see atelier.runtime.jobs: owner and lease);
when that replica stops, another adopts the run. The work itself reports through its exit status
(0 = succeeded) and whatever it writes to the database or the artefact store
(atelier.runtime.artefacts; a Job pod gets the same ATELIER_* settings through the ConfigMap); the operation's response is built by the caller's ``result``
callback (by default a Struct naming the run).
"""

from __future__ import annotations

import json
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import sqlalchemy as sa
from google.protobuf import message, struct_pb2

from atelier.runtime import jobs as jobs_module
from atelier.runtime.config import ServiceConfig
from atelier.runtime.errors import AtelierError, CancelledError, DeadlineExceededError
from atelier.runtime.jobs import JobHandle, JobManager, JobState

log = logging.getLogger(__name__)

GPU_RESOURCE = "nvidia.com/gpu"
# Labels every Job carries, so `kubectl get jobs -l app.kubernetes.io/part-of=atelier` lists them.
PART_OF = "atelier"
OPERATION_ANNOTATION = "atelier.dev/operation"
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


# Consecutive failed status reads (API errors) before the operation fails: ~1 minute at 2 s.
MAX_STATUS_ERRORS = 30


class JobFailedError(AtelierError):
    """The Job (or subprocess) ended without success; the operation reports ABORTED."""

    code_name = "ABORTED"


@dataclass(frozen=True)
class Task:
    """What to run: ``python -m module *args`` with environment and resources."""

    module: str
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    # Kubernetes quantities, e.g. {"cpu": "2", "memory": "4Gi"}; empty = the runner's defaults.
    requests: Mapping[str, str] = field(default_factory=dict)
    limits: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0

    def command(self, python: str = "python") -> list[str]:
        return [python, "-m", self.module, *self.args]


@dataclass(frozen=True)
class ClusterSettings:
    """Where and how Jobs run in the cluster (the chart passes these as ATELIER_JOB_* variables)."""

    namespace: str = "default"
    image: str = "ghcr.io/atelier-ai/atelier:0.1.0"
    service_account: str = ""
    backoff_limit: int = 1
    ttl_seconds_after_finished: int = 3600
    active_deadline_seconds: int | None = 86400
    requests: Mapping[str, str] = field(default_factory=lambda: {"cpu": "1", "memory": "2Gi"})
    limits: Mapping[str, str] = field(default_factory=lambda: {"memory": "8Gi"})
    # The Secret holding ATELIER_DATABASE_URL, so the Job writes to the same database.
    database_secret: str = ""
    database_secret_key: str = "url"
    node_selector: Mapping[str, str] = field(default_factory=dict)
    tolerations: Sequence[Mapping[str, Any]] = ()
    # The chart's ConfigMap of shared ATELIER_* settings (log format, tenant, artefact store...),
    # and a Secret of more variables (the artefact bucket's credentials), both as envFrom.
    config_map: str = ""
    env_secret: str = ""
    data_dir: str = "/var/lib/atelier"
    run_as_user: int = 10001


def job_name(service: str, operation: str) -> str:
    """The Job's name for an operation: stable, so a restarted service finds its Job again."""
    suffix = operation.rsplit("/", 1)[-1].lower()
    suffix = re.sub(r"[^a-z0-9]", "", suffix)[:20]
    name = f"atelier-{service}-{suffix}".strip("-")[:63].rstrip("-")
    if not _DNS_LABEL.match(name):
        raise ValueError(f"cannot make a Job name from service {service!r} and operation {operation!r}")
    return name


def labels_for(service: str, kind: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": "atelier",
        "app.kubernetes.io/component": "job",
        "app.kubernetes.io/part-of": PART_OF,
        "app.kubernetes.io/managed-by": "atelier-runtime",
        "atelier.dev/service": service,
        # Label values allow [-_.a-zA-Z0-9]; job kinds are snake_case names.
        "atelier.dev/kind": re.sub(r"[^-_.a-zA-Z0-9]", "-", kind)[:63],
    }


def build_job(
    task: Task, settings: ClusterSettings, *, name: str, service: str, kind: str, operation: str
) -> Any:
    """The batch/v1 Job running ``task``: one pod, never restarted in place, retried backoff_limit
    times, deleted ttl_seconds_after_finished after it ends."""
    from kubernetes import client

    env = [
        client.V1EnvVar(name="ATELIER_OPERATION", value=operation),
        client.V1EnvVar(name="ATELIER_DATA_DIR", value=settings.data_dir),
    ]
    env += [client.V1EnvVar(name=key, value=str(value)) for key, value in sorted(task.env.items())]
    if settings.database_secret:
        env.append(
            client.V1EnvVar(
                name="ATELIER_DATABASE_URL",
                value_from=client.V1EnvVarSource(
                    secret_key_ref=client.V1SecretKeySelector(
                        name=settings.database_secret, key=settings.database_secret_key
                    )
                ),
            )
        )
    requests = dict(task.requests or settings.requests)
    limits = dict(task.limits or settings.limits)
    if task.gpus:
        limits[GPU_RESOURCE] = str(task.gpus)
    labels = labels_for(service, kind)
    container = client.V1Container(
        name="task",
        image=settings.image,
        image_pull_policy="IfNotPresent",
        command=task.command(),
        env=env,
        env_from=[
            *(
                [client.V1EnvFromSource(config_map_ref=client.V1ConfigMapEnvSource(name=settings.config_map))]
                if settings.config_map
                else []
            ),
            *(
                [client.V1EnvFromSource(secret_ref=client.V1SecretEnvSource(name=settings.env_secret))]
                if settings.env_secret
                else []
            ),
        ]
        or None,
        resources=client.V1ResourceRequirements(requests=requests, limits=limits),
        security_context=client.V1SecurityContext(
            allow_privilege_escalation=False,
            read_only_root_filesystem=True,
            capabilities=client.V1Capabilities(drop=["ALL"]),
        ),
        volume_mounts=[
            client.V1VolumeMount(name="data", mount_path=settings.data_dir),
            client.V1VolumeMount(name="tmp", mount_path="/tmp"),
        ],
    )
    pod = client.V1PodSpec(
        restart_policy="Never",
        service_account_name=settings.service_account or None,
        automount_service_account_token=False,
        security_context=client.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=settings.run_as_user,
            run_as_group=settings.run_as_user,
            seccomp_profile=client.V1SeccompProfile(type="RuntimeDefault"),
        ),
        containers=[container],
        volumes=[
            client.V1Volume(name="data", empty_dir=client.V1EmptyDirVolumeSource()),
            client.V1Volume(name="tmp", empty_dir=client.V1EmptyDirVolumeSource()),
        ],
        node_selector=dict(settings.node_selector) or None,
        tolerations=[client.V1Toleration(**_snake(t)) for t in settings.tolerations] or None,
    )
    return client.V1Job(
        api_version="batch/v1",
        kind="Job",
        metadata=client.V1ObjectMeta(
            name=name,
            namespace=settings.namespace,
            labels=labels,
            annotations={OPERATION_ANNOTATION: operation},
        ),
        spec=client.V1JobSpec(
            backoff_limit=settings.backoff_limit,
            ttl_seconds_after_finished=settings.ttl_seconds_after_finished,
            active_deadline_seconds=settings.active_deadline_seconds,
            template=client.V1PodTemplateSpec(metadata=client.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )


def _snake(mapping: Mapping[str, Any]) -> dict[str, Any]:
    """tolerationSeconds -> toleration_seconds (values files are camelCase, the client is not)."""
    return {re.sub(r"(?<!^)(?=[A-Z])", "_", k).lower(): v for k, v in mapping.items()}


@dataclass(frozen=True)
class RunStatus:
    """A run's state as the operation reports it."""

    state: int  # atelier.common.v1.JobState
    message: str = ""
    # Why it failed: "BackoffLimitExceeded", "DeadlineExceeded", "exit code 3", ...
    reason: str = ""
    fraction: float = 0.0

    @property
    def done(self) -> bool:
        return self.state in (JobState.JOB_STATE_SUCCEEDED, JobState.JOB_STATE_FAILED)


class Runner(Protocol):
    """Starts, observes and stops a run by name."""

    name: str  # recorded in the operation's runner field

    def start(self, task: Task, *, name: str, service: str, kind: str, operation: str) -> None: ...

    def status(self, name: str) -> RunStatus: ...

    def stop(self, name: str) -> None: ...


class KubernetesRunner:
    """Runs tasks as Kubernetes Jobs through ``kubernetes.client.BatchV1Api``."""

    name = "kubernetes"

    def __init__(
        self, settings: ClusterSettings, batch_api: Any | None = None, core_api: Any | None = None
    ) -> None:
        self.settings = settings
        if batch_api is None:
            from kubernetes import client, config

            try:
                config.load_incluster_config()  # in a pod: the ServiceAccount token the chart grants
            except config.ConfigException:
                config.load_kube_config()  # on a workstation: ~/.kube/config
            batch_api, core_api = client.BatchV1Api(), client.CoreV1Api()
        self.batch = batch_api
        self.core = core_api

    def start(self, task: Task, *, name: str, service: str, kind: str, operation: str) -> None:
        from kubernetes.client.exceptions import ApiException

        body = build_job(task, self.settings, name=name, service=service, kind=kind, operation=operation)
        try:
            self.batch.create_namespaced_job(namespace=self.settings.namespace, body=body)
        except ApiException as exc:
            if exc.status != 409:  # 409: already created (a resumed watcher); watch the existing one
                raise
        log.info("created Job %s/%s for %s", self.settings.namespace, name, operation)

    def status(self, name: str) -> RunStatus:
        from kubernetes.client.exceptions import ApiException

        try:
            job = self.batch.read_namespaced_job_status(name=name, namespace=self.settings.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return RunStatus(JobState.JOB_STATE_FAILED, f"Job {name} no longer exists", "NotFound")
            raise
        status = job.status
        if status is None:  # just created: the controller has not written a status yet
            return RunStatus(JobState.JOB_STATE_QUEUED, f"Job {name}: created")
        for condition in status.conditions or []:
            if condition.status != "True":
                continue
            if condition.type in ("Complete", "SuccessCriteriaMet"):
                return RunStatus(JobState.JOB_STATE_SUCCEEDED, "Job complete", condition.reason or "", 1.0)
            if condition.type in ("Failed", "FailureTarget"):
                reason = condition.reason or "Failed"
                detail = condition.message or ""
                tail = self._log_tail(name)
                text = f"Job {name} failed: {reason}" + (f" ({detail})" if detail else "")
                return RunStatus(
                    JobState.JOB_STATE_FAILED, text + (f"; last log lines: {tail}" if tail else ""), reason
                )
        if status.active:
            return RunStatus(
                JobState.JOB_STATE_RUNNING,
                f"Job {name}: {status.active} pod(s) running"
                + (f", {status.failed} failed attempt(s)" if status.failed else ""),
            )
        return RunStatus(JobState.JOB_STATE_QUEUED, f"Job {name}: waiting for a pod to be scheduled")

    def _log_tail(self, name: str, lines: int = 5) -> str:
        """The end of the last pod's log (RBAC: pods list, pods/log get); empty when unavailable."""
        if self.core is None:
            return ""
        try:
            pods = self.core.list_namespaced_pod(
                namespace=self.settings.namespace, label_selector=f"job-name={name}"
            )
            if not pods.items:
                return ""
            last = sorted(pods.items, key=lambda p: p.metadata.creation_timestamp or 0)[-1]
            text = self.core.read_namespaced_pod_log(
                name=last.metadata.name, namespace=self.settings.namespace, tail_lines=lines
            )
            return " | ".join(str(text).strip().splitlines()[-lines:])[:500]
        except Exception as exc:  # a missing log must not hide the failure itself
            log.warning("could not read the log of Job %s: %s", name, exc)
            return ""

    def stop(self, name: str) -> None:
        from kubernetes import client
        from kubernetes.client.exceptions import ApiException

        try:
            # Background propagation deletes the Job's pods too (the default orphans them).
            self.batch.delete_namespaced_job(
                name=name,
                namespace=self.settings.namespace,
                body=client.V1DeleteOptions(propagation_policy="Background"),
            )
        except ApiException as exc:
            if exc.status != 404:
                raise


class SubprocessRunner:
    """Runs tasks as child processes of the service: the local stand-in for a Job."""

    name = "local"

    def __init__(
        self,
        log_dir: Path,
        python: str = sys.executable,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        self.log_dir = log_dir
        self.python = python
        self.cwd = cwd
        self.env = dict(env or {})
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._lock = threading.Lock()

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def start(self, task: Task, *, name: str, service: str, kind: str, operation: str) -> None:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env, **task.env, "ATELIER_OPERATION": operation}
        with self.log_path(name).open("wb") as out:
            proc = subprocess.Popen(
                task.command(self.python),
                env=env,
                cwd=self.cwd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        with self._lock:
            self._procs[name] = proc
        log.info("started %s (pid %d) for %s", name, proc.pid, operation)

    def status(self, name: str) -> RunStatus:
        with self._lock:
            proc = self._procs.get(name)
        if proc is None:
            return RunStatus(JobState.JOB_STATE_FAILED, f"{name} is not known to this process", "NotFound")
        code = proc.poll()
        if code is None:
            return RunStatus(JobState.JOB_STATE_RUNNING, f"{name}: running (pid {proc.pid})")
        if code == 0:
            return RunStatus(JobState.JOB_STATE_SUCCEEDED, "process exited 0", "", 1.0)
        tail = " | ".join(self.log_path(name).read_text(errors="replace").strip().splitlines()[-5:])[:500]
        return RunStatus(
            JobState.JOB_STATE_FAILED,
            f"{name} exited with code {code}; last log lines: {tail}",
            f"exit code {code}",
        )

    def stop(self, name: str) -> None:
        with self._lock:
            proc = self._procs.get(name)
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _default_result(name: str, runner: str, status: RunStatus) -> message.Message:
    result = struct_pb2.Struct()
    result.update({"run": name, "runner": runner, "message": status.message})
    return result


def _watch(
    handle: JobHandle,
    runner: Runner,
    task: Task | None,
    *,
    service: str,
    kind: str,
    poll_interval_s: float,
    result: Callable[[RunStatus], message.Message] | None,
) -> message.Message:
    """The operation's job function: start the run (unless resuming), then mirror its status."""
    name = job_name(service, handle.name)
    if task is not None:
        runner.start(task, name=name, service=service, kind=kind, operation=handle.name)
    errors = 0
    try:
        while True:
            try:
                status = runner.status(name)
                errors = 0
            except Exception as exc:  # an API server restart or a network blip must not fail the job
                errors += 1
                if errors >= MAX_STATUS_ERRORS:
                    raise
                log.warning("reading the status of %s failed (%d in a row): %s", name, errors, exc)
                status = RunStatus(JobState.JOB_STATE_RUNNING, f"{name}: status unavailable ({exc})")
            if status.state == JobState.JOB_STATE_SUCCEEDED:
                return result(status) if result is not None else _default_result(name, runner.name, status)
            if status.state == JobState.JOB_STATE_FAILED:
                if status.reason == "DeadlineExceeded":
                    raise DeadlineExceededError(status.message)
                raise JobFailedError(status.message)
            if _cancel_requested(handle):
                handle.cancellation.cancel("cancelled by request")
            handle.progress(status.fraction, status.message)  # raises CancelledError when cancelled
            deadline = time.monotonic() + poll_interval_s
            while time.monotonic() < deadline:
                handle.cancellation.check()
                time.sleep(min(0.1, poll_interval_s))
    except CancelledError:
        reason = handle.cancellation.reason
        if runner.name == "kubernetes" and reason == jobs_module.LOST_LEASE_REASON:
            # Another replica adopted the run while this one stalled: the run is its business now.
            raise jobs_module.JobDetached(f"{name} is watched by another replica") from None
        if runner.name == "kubernetes" and reason == jobs_module.SHUTDOWN_REASON:
            # The Job goes on in the cluster; another replica of this service adopts the watch.
            raise jobs_module.JobDetached(f"{name} keeps running; watching stops with this process") from None
        runner.stop(name)
        raise


def _cancel_requested(handle: JobHandle) -> bool:
    """A cancel sent to another replica of the service reaches this watcher through the store."""
    table = jobs_module.operations_table
    with handle.manager.store.engine.connect() as conn:
        return bool(conn.scalar(sa.select(table.c.cancel_requested).where(table.c.name == handle.name)))


def submit(
    jobs: JobManager,
    kind: str,
    task: Task,
    runner: Runner,
    *,
    poll_interval_s: float = 2.0,
    result: Callable[[RunStatus], message.Message] | None = None,
    tenant: str | None = None,
) -> str:
    """Run ``task`` with ``runner`` as a long-running operation; returns the operation name at once."""

    def work(handle: JobHandle) -> message.Message:
        return _watch(
            handle,
            runner,
            task,
            service=jobs.service,
            kind=kind,
            poll_interval_s=poll_interval_s,
            result=result,
        )

    return jobs.submit(kind, work, tenant=tenant, runner=runner.name)


def resume(
    jobs: JobManager,
    runner: Runner,
    *,
    poll_interval_s: float = 2.0,
    result: Callable[[RunStatus], message.Message] | None = None,
) -> list[str]:
    """Watch this service's runs of ``runner`` whose replica stopped: now (those left by a previous
    process) and whenever another replica dies later (its lease expires; a replica that stops
    cleanly lets it lapse at once). A run another live replica watches is left to it.

    Call from a service's ``load`` when its runner is a KubernetesRunner; returns the operations
    adopted now.
    """

    def adopt(name: str, kind: str) -> None:
        def work(handle: JobHandle) -> message.Message:
            return _watch(
                handle,
                runner,
                None,
                service=jobs.service,
                kind=kind,
                poll_interval_s=poll_interval_s,
                result=result,
            )

        jobs.attach(name, kind, work)

    return jobs.adopt(runner.name, adopt)


def cluster_settings_from_config(config: ServiceConfig) -> ClusterSettings:
    """ATELIER_JOB_* settings (ATELIER_<SERVICE>_JOB_* per service), as the chart sets them."""
    defaults = ClusterSettings()
    resources = json.loads(config.setting("JOB_RESOURCES", "") or "{}")
    deadline = int(config.setting("JOB_DEADLINE_SECONDS", str(defaults.active_deadline_seconds or 0)))
    return ClusterSettings(
        namespace=config.setting("JOB_NAMESPACE", defaults.namespace),
        image=config.setting("JOB_IMAGE", defaults.image),
        service_account=config.setting("JOB_SERVICE_ACCOUNT", ""),
        backoff_limit=int(config.setting("JOB_BACKOFF_LIMIT", str(defaults.backoff_limit))),
        ttl_seconds_after_finished=int(
            config.setting("JOB_TTL_SECONDS", str(defaults.ttl_seconds_after_finished))
        ),
        active_deadline_seconds=deadline or None,
        requests={k: str(v) for k, v in resources.get("requests", defaults.requests).items()},
        limits={k: str(v) for k, v in resources.get("limits", defaults.limits).items()},
        database_secret=config.setting("JOB_DATABASE_SECRET", ""),
        database_secret_key=config.setting("JOB_DATABASE_SECRET_KEY", "url"),
        node_selector={
            str(k): str(v) for k, v in json.loads(config.setting("JOB_NODE_SELECTOR", "") or "{}").items()
        },
        tolerations=json.loads(config.setting("JOB_TOLERATIONS", "") or "[]"),
        config_map=config.setting("JOB_CONFIG_MAP", ""),
        env_secret=config.setting("JOB_ENV_SECRET", ""),
        data_dir=str(config.data_dir),
    )


def runner_from_config(config: ServiceConfig) -> Runner:
    """``ATELIER_JOB_RUNNER``: ``local`` (a subprocess, the default) or ``kubernetes``."""
    choice = config.setting("JOB_RUNNER", "local").strip().lower()
    if choice == "kubernetes":
        return KubernetesRunner(cluster_settings_from_config(config))
    if choice in ("local", "subprocess", ""):
        return SubprocessRunner(config.service_data_dir / "jobs")
    raise ValueError(f"ATELIER_JOB_RUNNER must be local or kubernetes, got {choice!r}")
