"""deploy/kubernetes: every overlay renders with `kubectl kustomize` and validates offline.

The rendered objects are checked against the Kubernetes OpenAPI schemas bundled
in kubernetes-validate (no cluster, no network), then for what the schemas
cannot say: probes, resources, PVCs, no inline secrets, names Prometheus needs.
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
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|_KEY|TOKEN", re.IGNORECASE)


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
    for obj, container in _containers(rendered[1]):
        if obj["kind"] not in {"Deployment", "StatefulSet"}:
            continue
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
            assert mounts[template["metadata"]["name"]] in {"/var/lib/gravix", "/data"}
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


def _one(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    (obj,) = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    return obj
