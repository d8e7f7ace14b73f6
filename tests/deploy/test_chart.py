"""The Helm chart, rendered and linted by the real Helm engine (helm-python-sdk, offline) and every
manifest validated against the Kubernetes 1.33 OpenAPI schemas (kubernetes-validate, strict)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from atelier.runtime.config import DEFAULT_PORTS
from atelier.runtime.registry import GRPC_SERVICES, SERVICES

helm = pytest.importorskip(
    "helm_python", reason="helm-python-sdk is a dev dependency (pip install -e '.[dev]')"
)
kubernetes_validate = pytest.importorskip("kubernetes_validate")

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "atelier"
PRODUCTION_VALUES = REPO / "deploy" / "values-gpu-production.yaml"
KUBE_VERSION = "1.33"
# Custom resources whose CRDs are not in the Kubernetes schemas (checked structurally below).
CRD_KINDS = {"ServiceMonitor": "monitoring.coreos.com/v1", "Certificate": "cert-manager.io/v1"}


def render(values: dict[str, Any], name: str = "atelier", namespace: str = "atelier") -> list[dict[str, Any]]:
    chart = helm.Chart.load(str(CHART))
    manifests = chart.render(values, name=name, namespace=namespace)
    docs: list[dict[str, Any]] = []
    for path, text in sorted(manifests.items()):
        if not path.endswith(".yaml"):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def production_values() -> dict[str, Any]:
    values: dict[str, Any] = yaml.safe_load(PRODUCTION_VALUES.read_text())
    return values


def by_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    result: dict[str, Any] = containers[0]
    return result


def env_of(deployment: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container(deployment)["env"]}


@pytest.fixture(scope="module")
def default_docs() -> list[dict[str, Any]]:
    return render({})


@pytest.fixture(scope="module")
def production_docs() -> list[dict[str, Any]]:
    return render(production_values())


@pytest.mark.parametrize("values_name", ["default", "gpu-production"])
def test_every_manifest_validates_against_kubernetes_schemas(values_name: str) -> None:
    docs = render({} if values_name == "default" else production_values())
    kinds = set()
    for doc in docs:
        kinds.add(doc["kind"])
        if doc["kind"] in CRD_KINDS:
            assert doc["apiVersion"] == CRD_KINDS[doc["kind"]]
            continue
        # Raises ValidationError naming the field on any unknown or mistyped field (strict).
        kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    expected = {"Deployment", "Service", "PodDisruptionBudget", "ServiceAccount", "ConfigMap"}
    if values_name == "gpu-production":
        expected |= {
            "HorizontalPodAutoscaler",
            "Role",
            "RoleBinding",
            "NetworkPolicy",
            "ServiceMonitor",
            "Certificate",
            "PersistentVolumeClaim",
        }
    assert expected <= kinds


def test_kubernetes_validate_really_rejects_a_bad_manifest(default_docs: list[dict[str, Any]]) -> None:
    deployment = dict(by_kind(default_docs, "Deployment")["atelier-nesting"])
    deployment["spec"] = {**deployment["spec"], "replicas": "two"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBE_VERSION, strict=True)


@pytest.mark.parametrize("values_name", ["default", "gpu-production"])
def test_helm_lint_has_no_errors_or_warnings(values_name: str) -> None:
    values = {} if values_name == "default" else production_values()
    report = helm.lint(str(CHART), values, strict=True)
    assert report["errors"] == []
    # Severity 2 = warning, 3 = error; the only info message allowed is the missing icon.
    problems = [m for m in report["messages"] if m["severity"] >= 2]
    assert problems == []


def test_one_deployment_service_pdb_account_per_service(default_docs: list[dict[str, Any]]) -> None:
    for kind in ("Deployment", "Service", "PodDisruptionBudget", "ServiceAccount"):
        assert set(by_kind(default_docs, kind)) == {f"atelier-{s}" for s in SERVICES}, kind
    for name, svc in by_kind(default_docs, "Service").items():
        service = name.removeprefix("atelier-")
        ports = {p["name"]: p["port"] for p in svc["spec"]["ports"]}
        assert ports == {"grpc": DEFAULT_PORTS[service][0], "metrics": DEFAULT_PORTS[service][1]}
        assert svc["spec"]["selector"]["app.kubernetes.io/component"] == service


def test_labels_follow_helm_conventions(default_docs: list[dict[str, Any]]) -> None:
    for doc in default_docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "atelier"
        assert labels["app.kubernetes.io/instance"] == "atelier"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["helm.sh/chart"] == "atelier-0.1.0"
    for deployment in by_kind(default_docs, "Deployment").values():
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()


def test_probes_use_grpc_health_with_the_registry_service_names(default_docs: list[dict[str, Any]]) -> None:
    for service, grpc_name in GRPC_SERVICES.items():
        c = container(by_kind(default_docs, "Deployment")[f"atelier-{service}"])
        port = DEFAULT_PORTS[service][0]
        # Readiness also needs the database (runtime.readiness): an outage takes the pod out of
        # rotation without a restart.
        assert c["readinessProbe"]["grpc"] == {"port": port, "service": "atelier.readiness"}
        assert c["startupProbe"]["grpc"] == {"port": port, "service": grpc_name}
        # Liveness must not depend on the model: the health service itself is SERVING at once.
        assert c["livenessProbe"]["grpc"] == {"port": port, "service": "grpc.health.v1.Health"}
        assert c["args"] == ["python", "-m", "atelier.runtime.server", service]
    generation = container(by_kind(default_docs, "Deployment")["atelier-generation"])
    startup = generation["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 15 * 60  # model loading


def test_environment_matches_the_runtime_configuration(default_docs: list[dict[str, Any]]) -> None:
    config = by_kind(default_docs, "ConfigMap")["atelier"]["data"]
    assert config["ATELIER_HOST"] == "0.0.0.0"
    assert config["ATELIER_LOG_FORMAT"] == "json"
    assert config["ATELIER_MAX_MESSAGE_BYTES"] == "67108864"
    for service in SERVICES:
        deployment = by_kind(default_docs, "Deployment")[f"atelier-{service}"]
        env = env_of(deployment)
        grpc_port, metrics_port = DEFAULT_PORTS[service]
        assert env[f"ATELIER_{service.upper()}_PORT"] == str(grpc_port)
        assert env[f"ATELIER_{service.upper()}_METRICS_PORT"] == str(metrics_port)
        grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
        # The runtime drains within the pod's grace period, leaving time for preStop and exit.
        assert 0 < int(env["ATELIER_GRACE_SECONDS"]) < grace
        assert "ATELIER_DATABASE_URL" not in env  # no database configured by default


def test_pods_run_non_root_with_a_read_only_root(default_docs: list[dict[str, Any]]) -> None:
    for deployment in by_kind(default_docs, "Deployment").values():
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert container(deployment)["securityContext"]["readOnlyRootFilesystem"] is True
        assert pod["automountServiceAccountToken"] is False


def test_generation_lands_on_gpu_nodes_with_its_model_volume(production_docs: list[dict[str, Any]]) -> None:
    deployment = by_kind(production_docs, "Deployment")["atelier-generation"]
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert c["image"] == "registry.example.com/atelier/atelier-cuda:0.1.0"
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    assert "nodeAffinity" in pod["affinity"]
    assert pod["terminationGracePeriodSeconds"] >= 300
    mounts = {m["name"]: m for m in c["volumeMounts"]}
    assert mounts["models"]["readOnly"] is True
    volumes = {v["name"]: v for v in pod["volumes"]}
    claim = volumes["models"]["persistentVolumeClaim"]
    assert claim == {"claimName": "atelier-generation-models", "readOnly": True}
    pvc = by_kind(production_docs, "PersistentVolumeClaim")["atelier-generation-models"]
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    assert env_of(deployment)["ATELIER_GENERATION_MODELS_DIR"] == mounts["models"]["mountPath"]
    # A GPU pool rarely has a spare GPU for a surge pod.
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    # CPU services get no GPU.
    for service in SERVICES:
        if service != "generation":
            limits = container(by_kind(production_docs, "Deployment")[f"atelier-{service}"])["resources"][
                "limits"
            ]
            assert "nvidia.com/gpu" not in limits


def test_model_volume_from_a_read_only_host_path() -> None:
    docs = render(
        {"services": {"generation": {"models": {"enabled": True, "hostPath": "/srv/atelier-models"}}}}
    )
    pod = by_kind(docs, "Deployment")["atelier-generation"]["spec"]["template"]["spec"]
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["models"]["hostPath"] == {"path": "/srv/atelier-models", "type": "Directory"}
    assert "PersistentVolumeClaim" not in {d["kind"] for d in docs}


def test_secrets_database_api_keys_and_tls(production_docs: list[dict[str, Any]]) -> None:
    deployment = by_kind(production_docs, "Deployment")["atelier-nesting"]
    env = env_of(deployment)
    assert env["ATELIER_DATABASE_URL"] == {"secretKeyRef": {"name": "atelier-database", "key": "url"}}
    assert env["ATELIER_API_KEYS_FILE"] == "/etc/atelier/api-keys/keys"
    assert env["ATELIER_TLS_CERT_FILE"] == "/etc/atelier/tls/tls.crt"
    assert env["ATELIER_TLS_KEY_FILE"] == "/etc/atelier/tls/tls.key"
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["tls"]["secret"]["secretName"] == "atelier-tls"
    # The kubelet's native gRPC probe is plaintext only: with TLS the probe is an exec health check.
    probe = container(deployment)["readinessProbe"]
    assert "grpc" not in probe
    assert "atelier.readiness" in probe["exec"]["command"][-1]
    assert "atelier.nesting.v1.NestingService" in container(deployment)["startupProbe"]["exec"]["command"][-1]
    certificate = by_kind(production_docs, "Certificate")["atelier-tls"]
    assert certificate["spec"]["secretName"] == "atelier-tls"
    assert "atelier-nesting.atelier.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"]["name"] == "atelier-ca"


def test_database_url_from_values_creates_a_secret() -> None:
    docs = render({"database": {"url": "postgresql://atelier:pw@pg:5432/atelier"}})
    secret = by_kind(docs, "Secret")["atelier-database"]
    assert secret["stringData"] == {"url": "postgresql://atelier:pw@pg:5432/atelier"}
    env = env_of(by_kind(docs, "Deployment")["atelier-trends"])
    assert env["ATELIER_DATABASE_URL"] == {"secretKeyRef": {"name": "atelier-database", "key": "url"}}


def test_artefacts_in_s3_reach_every_service_and_the_data_dir_is_scratch(
    default_docs: list[dict[str, Any]],
) -> None:
    config = by_kind(default_docs, "ConfigMap")["atelier"]["data"]
    assert "ATELIER_ARTEFACTS_URL" not in config  # by default artefacts live in the database
    assert config["ATELIER_JOB_LEASE_SECONDS"] == "30"
    for deployment in by_kind(default_docs, "Deployment").values():
        volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
        assert volumes["data"] == {"name": "data", "emptyDir": {}}  # scratch: lost with the pod
    docs = render(
        {
            "artefacts": {
                "url": "s3://atelier/prod",
                "s3": {"endpointUrl": "http://minio.minio:9000", "existingSecret": "atelier-artefacts"},
            }
        }
    )
    config = by_kind(docs, "ConfigMap")["atelier"]["data"]
    assert config["ATELIER_ARTEFACTS_URL"] == "s3://atelier/prod"
    assert config["ATELIER_S3_ENDPOINT_URL"] == "http://minio.minio:9000"
    for deployment in by_kind(docs, "Deployment").values():
        assert {"secretRef": {"name": "atelier-artefacts"}} in container(deployment)["envFrom"]


def test_jobs_rbac_is_least_privilege(production_docs: list[dict[str, Any]]) -> None:
    role = by_kind(production_docs, "Role")["atelier-jobs"]
    rules = {(tuple(r["apiGroups"]), tuple(r["resources"])): set(r["verbs"]) for r in role["rules"]}
    assert rules == {
        (("batch",), ("jobs",)): {"create", "get", "list", "watch", "delete"},
        (("",), ("pods",)): {"get", "list"},
        (("",), ("pods/log",)): {"get"},
    }
    binding = by_kind(production_docs, "RoleBinding")["atelier-jobs"]
    subjects = {s["name"] for s in binding["subjects"]}
    assert subjects == {"atelier-recommendations", "atelier-nesting", "atelier-trends"}
    deployments = by_kind(production_docs, "Deployment")
    recs = deployments["atelier-recommendations"]
    assert recs["spec"]["template"]["spec"]["automountServiceAccountToken"] is True
    assert env_of(recs)["ATELIER_JOB_RUNNER"] == "kubernetes"
    assert env_of(recs)["ATELIER_JOB_SERVICE_ACCOUNT"] == "atelier-job"
    # Services that create no jobs get no API token.
    assert deployments["atelier-body"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False
    assert "ATELIER_JOB_RUNNER" not in env_of(deployments["atelier-body"])
    assert "atelier-job" in by_kind(production_docs, "ServiceAccount")


def test_autoscaling_cpu_and_custom_metrics(production_docs: list[dict[str, Any]]) -> None:
    hpas = by_kind(production_docs, "HorizontalPodAutoscaler")
    generation = hpas["atelier-generation"]["spec"]
    assert generation["metrics"] == [
        {
            "type": "Pods",
            "pods": {
                "metric": {"name": "atelier_generation_queue_depth"},
                "target": {"type": "AverageValue", "averageValue": "2"},
            },
        }
    ]
    assert hpas["atelier-body"]["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    # The HPA owns the replica count.
    assert "replicas" not in by_kind(production_docs, "Deployment")["atelier-body"]["spec"]
    assert "atelier-trends" not in hpas


def test_service_monitors_and_network_policies(production_docs: list[dict[str, Any]]) -> None:
    monitors = by_kind(production_docs, "ServiceMonitor")
    assert set(monitors) == {f"atelier-{s}" for s in SERVICES}
    endpoint = monitors["atelier-inspection"]["spec"]["endpoints"][0]
    assert endpoint["port"] == "metrics"
    assert endpoint["relabelings"] == [{"targetLabel": "atelier_service", "replacement": "inspection"}]
    assert monitors["atelier-inspection"]["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    policies = by_kind(production_docs, "NetworkPolicy")
    assert set(policies) == {f"atelier-{s}" for s in SERVICES}
    ingress = policies["atelier-body"]["spec"]["ingress"]
    assert ingress[0]["ports"] == [{"port": "grpc", "protocol": "TCP"}]
    assert ingress[1]["ports"] == [{"port": "metrics", "protocol": "TCP"}]


def test_disabled_services_render_nothing() -> None:
    docs = render({"services": {s: {"enabled": s == "nesting"} for s in SERVICES}})
    assert set(by_kind(docs, "Deployment")) == {"atelier-nesting"}
    assert set(by_kind(docs, "Service")) == {"atelier-nesting"}


def test_release_name_prefixes_every_object() -> None:
    docs = render({}, name="shop-eu")
    assert set(by_kind(docs, "Deployment")) == {f"shop-eu-atelier-{s}" for s in SERVICES}


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"services": {"nesting": {"replicas": "two"}}}, "/services/nesting/replicas"),
        ({"services": {"nestin": {"enabled": True}}}, "'nestin' not allowed"),
        ({"services": {"generation": {"gpu": {"count": -1}}}}, "/services/generation/gpu/count"),
        ({"jobs": {"runner": "k8s"}}, "/jobs/runner"),
        ({"config": {"logFormat": "xml"}}, "/config/logFormat"),
        ({"services": {"body": {"ports": {"grpc": 70000, "metrics": 9102}}}}, "/services/body/ports/grpc"),
        ({"services": {"body": {"resources": {"limits": {"memory": "lots"}}}}}, "/services/body/resources"),
        ({"database": {"url": "mysql://x"}}, "/database/url"),
        ({"artefacts": {"url": "/mnt/models"}}, "/artefacts/url"),
    ],
)
def test_bad_values_fail_with_the_key_named(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmValuesError) as excinfo:
        render(values)
    assert message in str(excinfo.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"services": {"generation": {"models": {"enabled": True}}}},
            "services.generation.models.enabled needs",
        ),
        (
            {"services": {"body": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": 0}}}},
            "services.body.autoscaling",
        ),
        ({"tls": {"enabled": True, "certManager": {"enabled": True}}}, "tls.certManager.issuerRef.name"),
    ],
)
def test_inconsistent_values_fail_at_render(values: dict[str, Any], message: str) -> None:
    with pytest.raises(helm.HelmError) as excinfo:
        render(values)
    assert message in str(excinfo.value)


def test_notes_name_every_service_endpoint() -> None:
    notes = helm.Chart.load(str(CHART)).render({}, name="atelier", namespace="shop")[
        "atelier/templates/NOTES.txt"
    ]
    for service, (port, _metrics) in DEFAULT_PORTS.items():
        assert f"atelier-{service}.shop.svc:{port}" in notes
    assert "no database configured" in notes


def test_generation_models_dir_is_where_the_service_looks(production_docs: list[dict[str, Any]]) -> None:
    env = env_of(by_kind(production_docs, "Deployment")["atelier-generation"])
    data_dir = by_kind(production_docs, "ConfigMap")["atelier"]["data"]["ATELIER_DATA_DIR"]
    # The service's own default is <ATELIER_DATA_DIR>/models/generation (atelier.generation.server).
    assert env["ATELIER_GENERATION_MODELS_DIR"] == f"{data_dir}/models/generation"
    assert env["ATELIER_GENERATION_PRELOAD"] == "all"  # readiness = models loaded


def test_a_writable_model_volume_for_a_training_service() -> None:
    docs = render(
        {
            "services": {
                "recommendations": {
                    "models": {
                        "enabled": True,
                        "existingClaim": "recs-models",
                        "readOnly": False,
                        "accessModes": ["ReadWriteMany"],
                    }
                }
            }
        }
    )
    deployment = by_kind(docs, "Deployment")["atelier-recommendations"]
    mounts = {m["name"]: m for m in container(deployment)["volumeMounts"]}
    assert mounts["models"]["readOnly"] is False
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert volumes["models"]["persistentVolumeClaim"] == {"claimName": "recs-models", "readOnly": False}


def test_helm_test_hook_checks_every_enabled_service(production_docs: list[dict[str, Any]]) -> None:
    pod = by_kind(production_docs, "Pod")["atelier-test-health"]
    assert pod["metadata"]["annotations"]["helm.sh/hook"] == "test"
    env = {e["name"]: e["value"] for e in pod["spec"]["containers"][0]["env"]}
    targets = dict(t.split("=") for t in env["TARGETS"].split(","))
    assert targets == {f"atelier-{s}:{DEFAULT_PORTS[s][0]}": GRPC_SERVICES[s] for s in SERVICES}
    assert env["TLS"] == "1"
    assert pod["spec"]["volumes"] == [{"name": "tls", "secret": {"secretName": "atelier-tls"}}]
    # It passes the NetworkPolicy as a client.
    assert pod["metadata"]["labels"]["atelier-client"] == "true"
    only_body = render({"services": {s: {"enabled": s == "body"} for s in SERVICES}})
    pod = by_kind(only_body, "Pod")["atelier-test-health"]
    assert pod["spec"]["containers"][0]["env"][0]["value"] == "atelier-body:50052=atelier.body.v1.BodyService"


def test_key_store_insecure_and_reflection_values() -> None:
    docs = render(
        {
            "apiKeys": {"database": {"existingSecret": "atelier-key-db"}},
            "insecure": False,
            "reflection": "key",
        }
    )
    env = env_of(by_kind(docs, "Deployment")["atelier-body"])
    assert env["ATELIER_API_KEYS_DATABASE_URL"] == {"secretKeyRef": {"name": "atelier-key-db", "key": "url"}}
    assert "ATELIER_INSECURE" not in env and "ATELIER_API_KEYS_FILE" not in env
    assert by_kind(docs, "ConfigMap")["atelier"]["data"]["ATELIER_REFLECTION"] == "key"
    trial = env_of(by_kind(render({"insecure": True}), "Deployment")["atelier-body"])
    assert trial["ATELIER_INSECURE"] == "1"
    with pytest.raises(helm.HelmValuesError):
        render({"reflection": "sometimes"})


def test_notes_say_pods_refuse_to_start_without_keys() -> None:
    def notes(values: dict[str, Any]) -> str:
        rendered = helm.Chart.load(str(CHART)).render(values, name="atelier", namespace="shop")
        return str(rendered["atelier/templates/NOTES.txt"])

    assert "REFUSE TO START" in notes({}) and "atelier keys create" in notes({})
    assert "REFUSE TO START" not in notes({"apiKeys": {"existingSecret": "atelier-api-keys"}})
    assert "insecure=true" in notes({"insecure": True})


@pytest.mark.parametrize("ca_secret", ["", "shop-clients-ca"])
def test_mtls_wires_the_client_ca_and_a_plaintext_health_port_for_probes(ca_secret: str) -> None:
    values = {
        "apiKeys": {"existingSecret": "atelier-api-keys"},
        "tls": {
            "enabled": True,
            "secretName": "atelier-tls",
            "clientAuth": {"enabled": True, "caSecretName": ca_secret},
            "certManager": {"enabled": True, "issuerRef": {"name": "atelier-ca"}},
        },
    }
    docs = render(values)
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    deployment = by_kind(docs, "Deployment")["atelier-trends"]
    env = env_of(deployment)
    ca_file = "/etc/atelier/client-ca/ca.crt" if ca_secret else "/etc/atelier/tls/ca.crt"
    assert env["ATELIER_TLS_CLIENT_AUTH"] == "1" and env["ATELIER_TLS_CLIENT_CA_FILE"] == ca_file
    assert env["ATELIER_HEALTH_PORT"] == "8086"
    c = container(deployment)
    assert {"name": "health", "containerPort": 8086, "protocol": "TCP"} in c["ports"]
    # Readiness (issue 15: the database and draining) through the plaintext health port.
    assert c["readinessProbe"]["grpc"] == {"port": 8086, "service": "atelier.readiness"}
    assert c["livenessProbe"]["grpc"] == {"port": 8086, "service": "grpc.health.v1.Health"}
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    assert ("client-ca" in volumes) == bool(ca_secret)
    if ca_secret:
        assert volumes["client-ca"]["secret"]["secretName"] == ca_secret
    certificate = by_kind(docs, "Certificate")["atelier-tls"]
    assert "client auth" in certificate["spec"]["usages"]
    hook = next(d for d in docs if d["kind"] == "Pod")
    hook_env = {e["name"]: e["value"] for e in hook["spec"]["containers"][0]["env"]}
    assert hook_env["MTLS"] == "1"


def test_generation_a1111_http_port_is_off_by_default_and_wired_when_enabled(
    default_docs: list[dict[str, Any]],
) -> None:
    deployment = by_kind(default_docs, "Deployment")["atelier-generation"]
    assert "ATELIER_GENERATION_A1111_PORT" not in env_of(deployment)
    assert [p["name"] for p in by_kind(default_docs, "Service")["atelier-generation"]["spec"]["ports"]] == [
        "grpc",
        "metrics",
    ]
    values = production_values()
    values["services"]["generation"]["a1111"] = {"enabled": True, "port": 7861}
    docs = render(values)
    for doc in docs:
        if doc["kind"] not in CRD_KINDS:
            kubernetes_validate.validate(doc, KUBE_VERSION, strict=True)
    deployment = by_kind(docs, "Deployment")["atelier-generation"]
    assert env_of(deployment)["ATELIER_GENERATION_A1111_PORT"] == "7861"
    assert {"name": "a1111", "containerPort": 7861, "protocol": "TCP"} in container(deployment)["ports"]
    ports = {p["name"]: p for p in by_kind(docs, "Service")["atelier-generation"]["spec"]["ports"]}
    assert ports["a1111"]["port"] == 7861 and ports["a1111"]["targetPort"] == "a1111"
    client_rule = by_kind(docs, "NetworkPolicy")["atelier-generation"]["spec"]["ingress"][0]
    assert {"port": "a1111", "protocol": "TCP"} in client_rule["ports"]
    assert "a1111" not in {p["name"] for p in by_kind(docs, "Service")["atelier-body"]["spec"]["ports"]}
    notes = helm.Chart.load(str(CHART)).render(values, name="atelier", namespace="atelier")
    text = next(t for path, t in notes.items() if path.endswith("NOTES.txt"))
    assert "atelier-generation.atelier.svc:7861/sdapi/v1/" in text
