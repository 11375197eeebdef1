"""deploy/kubernetes: every overlay renders with `kubectl kustomize` and validates offline.

The rendered objects are checked against the Kubernetes OpenAPI schemas bundled
in kubernetes-validate (no cluster, no network), then for what the schemas
cannot say: probes, resources, PVCs, no inline secrets, names Prometheus needs,
one namespace, and the metadata store every Gravix pod shares (PostgreSQL from
the Secret, in the cluster with overlays/minio; SQLite on the PVC for single-node).
"""

from __future__ import annotations

import re
import subprocess
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.deploy.helpers import DEPLOY, require_tool

KUSTOMIZE = DEPLOY / "kubernetes"
TARGETS = ["base", "overlays/single-node", "overlays/minio"]
KUBERNETES_VERSION = "1.30.0"  # a release every supported cluster still serves
WORKLOADS = {"Deployment", "StatefulSet", "Job", "CronJob", "DaemonSet"}
# DATABASE_URL: a postgresql:// URL holds its password.
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|TOKEN|DATABASE_URL", re.IGNORECASE)


def render(target: str) -> list[dict[str, Any]]:
    kubectl = require_tool(
        "kubectl", "kubectl >= 1.27 from https://kubernetes.io/docs/tasks/tools/"
    )
    out = subprocess.run(
        [kubectl, "kustomize", str(KUSTOMIZE / target)],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert out.returncode == 0, out.stderr[-2000:]
    return [doc for doc in yaml.safe_load_all(out.stdout) if doc]


@pytest.fixture(scope="module", params=TARGETS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def _pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    if obj["kind"] == "CronJob":
        spec = spec["jobTemplate"]["spec"]
    return spec["template"]["spec"]  # type: ignore[no-any-return]


def _containers(objects: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (obj, c)
        for obj in objects
        if obj["kind"] in WORKLOADS
        for c in _pod_spec(obj)["containers"] + _pod_spec(obj).get("initContainers", [])
    ]


def test_validates_against_the_kubernetes_schemas(rendered: tuple[str, list[Any]]) -> None:
    target, objects = rendered
    assert objects
    for obj in objects:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{target}: {obj['kind']}/{obj['metadata']['name']}: {e.message}")


def test_every_container_has_requests_and_limits(rendered: tuple[str, list[Any]]) -> None:
    for obj, container in _containers(rendered[1]):
        resources = container.get("resources", {})
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(resources.get(kind, {})), (
                f"{obj['metadata']['name']}/{container['name']} has no {kind}"
            )


def test_long_running_containers_have_probes(rendered: tuple[str, list[Any]]) -> None:
    for obj in rendered[1]:
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
        for container in _pod_spec(obj)["containers"]:  # init containers take no probes
            assert "livenessProbe" in container and "readinessProbe" in container, obj["metadata"]
            if container["name"] == "gravix":
                assert container["livenessProbe"]["httpGet"]["path"] == "/live"
                assert container["readinessProbe"]["httpGet"]["path"] == "/ready"


def test_secrets_are_referenced_never_inlined(rendered: tuple[str, list[Any]]) -> None:
    target, objects = rendered
    assert not [o for o in objects if o["kind"] == "Secret"], f"{target} writes a Secret"
    for obj in objects:
        if obj["kind"] == "ConfigMap":
            assert not [k for k in obj["data"] if _SECRET_NAME.search(k)], obj["data"]
    refs = 0
    for obj, container in _containers(objects):
        for env in container.get("env", []):
            if _SECRET_NAME.search(env["name"]):
                assert "value" not in env, f"{obj['metadata']['name']}: {env['name']} inlined"
                assert env["valueFrom"]["secretKeyRef"]["name"] == "gravix-secrets"
                refs += 1
    assert refs, f"{target} references no secret"


def test_state_is_on_persistent_volumes_never_empty_dir(rendered: tuple[str, list[Any]]) -> None:
    _, objects = rendered
    claims = {o["metadata"]["name"] for o in objects if o["kind"] == "PersistentVolumeClaim"}
    for obj in objects:
        if obj["kind"] not in WORKLOADS:
            continue
        pod = _pod_spec(obj)
        assert not [v for v in pod.get("volumes", []) if "emptyDir" in v], obj["metadata"]
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
        if obj["kind"] == "StatefulSet":
            # One PVC per pod, mounted where the pod keeps its state.
            (template,) = obj["spec"]["volumeClaimTemplates"]
            mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
            assert mounts[template["metadata"]["name"]] in {
                "/var/lib/gravix", "/data", "/var/lib/postgresql/data"
            }  # fmt: skip
    ingest = _one(objects, "StatefulSet", "gravix-ingest")
    assert ingest["spec"]["serviceName"] == "gravix"


def test_names_prometheus_and_the_ingress_need(rendered: tuple[str, list[Any]]) -> None:
    target, objects = rendered
    services = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Service"}
    scraped = ["gravix"] if target.endswith("single-node") else ["gravix", "gravix-worker"]
    for name in scraped:  # deploy/prometheus/prometheus.yml's dns_sd_configs names
        assert services[name]["spec"]["clusterIP"] == "None"
        assert services[name]["spec"]["publishNotReadyAddresses"] is True
    ingress = _one(objects, "Ingress", "gravix")
    for rule in ingress["spec"]["rules"]:
        for path in rule["http"]["paths"]:
            assert path["backend"]["service"]["name"] in services
    for obj in objects:
        if obj["kind"] == "HorizontalPodAutoscaler":
            ref = obj["spec"]["scaleTargetRef"]
            _one(objects, ref["kind"], ref["name"])


def test_images_are_pinned(rendered: tuple[str, list[Any]]) -> None:
    for obj, container in _containers(rendered[1]):
        tag = container["image"].rpartition(":")[2]
        assert ":" in container["image"] and tag != "latest" and re.search(r"\d", tag), (
            obj["metadata"]["name"],
            container["image"],
        )


def test_overlays_differ_where_they_should() -> None:
    single = render("overlays/single-node")
    assert _one(single, "StatefulSet", "gravix-ingest")["spec"]["replicas"] == 1
    assert not [o for o in single if o["kind"] in {"HorizontalPodAutoscaler", "Deployment"}]
    config = _one(single, "ConfigMap", "gravix-config")["data"]
    assert config["GRAVIX_OBJECT_STORE_URL"] == ""  # the store is a folder on the PVC
    minio = render("overlays/minio")
    assert _one(minio, "ConfigMap", "gravix-config")["data"]["GRAVIX_S3_ENDPOINT_URL"] == (
        "http://minio:9000"
    )
    assert _one(minio, "StatefulSet", "minio")["spec"]["volumeClaimTemplates"]
    base = render("base")
    hpa = _one(base, "HorizontalPodAutoscaler", "gravix-ingest")
    assert (
        hpa["spec"]["minReplicas"] >= 1 and hpa["spec"]["maxReplicas"] > hpa["spec"]["minReplicas"]
    )


def test_everything_is_in_the_gravix_namespace(rendered: tuple[str, list[Any]]) -> None:
    """What an overlay adds too: the Gravix pods reach `minio` and `postgres` by short name."""
    target, objects = rendered
    for obj in objects:
        if obj["kind"] != "Namespace":
            assert obj["metadata"].get("namespace") == "gravix", (target, obj["metadata"])


def _env(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def _gravix_containers(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """Every container running the Gravix image (servers and init containers), by pod."""
    return [
        (obj["metadata"]["name"], c)
        for obj, c in _containers(objects)
        if c["image"].partition(":")[0] == "gravix"
    ]


@pytest.mark.parametrize("target", ["base", "overlays/minio"])
def test_every_gravix_pod_shares_one_postgresql(target: str) -> None:
    """Keys, tokens, users, sessions: GRAVIX_DATABASE_URL from the Secret, in every pod."""
    objects = render(target)
    pods = set()
    for pod, container in _gravix_containers(objects):
        ref = _env(container)["GRAVIX_DATABASE_URL"]["valueFrom"]["secretKeyRef"]
        assert ref == {"name": "gravix-secrets", "key": "database-url"}, (pod, container["name"])
        pods.add(pod)
    assert pods == {"gravix-ingest", "gravix-worker"}
    # The worker upgrades the schema before its server starts, with the same image.
    worker = _pod_spec(_one(objects, "Deployment", "gravix-worker"))
    (init,) = worker["initContainers"]
    assert init["args"] == ["db", "upgrade"]
    assert init["image"] == worker["containers"][0]["image"]


def test_single_node_keeps_sqlite_and_upgrades_it() -> None:
    objects = render("overlays/single-node")
    for pod, container in _gravix_containers(objects):
        assert "GRAVIX_DATABASE_URL" not in _env(container), (pod, container["name"])
    assert not [o for o in objects if o["metadata"]["name"] == "postgres"]
    pod = _pod_spec(_one(objects, "StatefulSet", "gravix-ingest"))
    (init,) = pod["initContainers"]
    assert init["args"] == ["db", "upgrade"]
    # On the SQLite files of the data dir the server uses: the same PVC, the same path.
    server_mounts = pod["containers"][0]["volumeMounts"]
    assert (
        init["volumeMounts"] == server_mounts == [{"name": "spool", "mountPath": "/var/lib/gravix"}]
    )
    assert init["envFrom"] == pod["containers"][0]["envFrom"]
    assert init["image"] == pod["containers"][0]["image"]  # the overlay's replacements


def test_minio_overlay_runs_postgresql_in_the_cluster() -> None:
    objects = render("overlays/minio")
    postgres = _one(objects, "StatefulSet", "postgres")
    (container,) = _pod_spec(postgres)["containers"]
    assert container["image"] == _compose_postgres_image()  # one version everywhere
    env = _env(container)
    assert env["POSTGRES_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
        "name": "gravix-secrets", "key": "postgres-password"
    }  # fmt: skip
    # The database and user the URL of docs/deploy.md names.
    assert env["POSTGRES_USER"]["value"] == env["POSTGRES_DB"]["value"] == "gravix"
    (claim,) = postgres["spec"]["volumeClaimTemplates"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert env["PGDATA"]["value"].startswith(mount["mountPath"] + "/")  # not lost+found's dir
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert container[probe]["exec"]["command"][0] == "pg_isready", probe
    service = _one(objects, "Service", "postgres")
    assert service["spec"]["ports"][0]["port"] == 5432
    assert service["spec"]["selector"].items() <= _pod_labels(postgres).items()
    # Only the Gravix pods may connect.
    policy = _one(objects, "NetworkPolicy", "postgres")
    assert policy["spec"]["podSelector"]["matchLabels"].items() <= _pod_labels(postgres).items()
    (rule,) = policy["spec"]["ingress"]
    (peer,) = rule["from"]
    allowed = peer["podSelector"]["matchLabels"]
    for pod in ("gravix-ingest", "gravix-worker"):
        (workload,) = [
            o for o in objects if o["metadata"]["name"] == pod and o["kind"] in WORKLOADS
        ]
        assert allowed.items() <= _pod_labels(workload).items(), pod


def _pod_labels(obj: dict[str, Any]) -> dict[str, str]:
    return obj["spec"]["template"]["metadata"]["labels"]  # type: ignore[no-any-return]


def _compose_postgres_image() -> str:
    compose = yaml.safe_load((DEPLOY / "docker-compose.yml").read_text())
    return compose["services"]["postgres"]["image"]  # type: ignore[no-any-return]


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj
