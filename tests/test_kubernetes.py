"""deploy/kubernetes: valid against the Kubernetes schemas, linted, and wired together."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import yaml

from app.settings import Settings
from tests.helpers import REPO

KUBERNETES = REPO / "deploy" / "kubernetes"
# The oldest Kubernetes the manifests promise to work on (autoscaling/v2, policy/v1 are GA).
KUBERNETES_VERSION = "1.27.0"


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text()))


def resource_files() -> list[str]:
    return list(kustomization()["resources"])


def resources() -> dict[str, dict[str, Any]]:
    """Kind/name -> the resource, for every file the kustomization lists."""
    found = {}
    for name in resource_files():
        for document in yaml.safe_load_all((KUBERNETES / name).read_text()):
            found[f"{document['kind']}/{document['metadata']['name']}"] = document
    return found


def pod_spec(kind_name: str) -> dict[str, Any]:
    return dict(resources()[kind_name]["spec"]["template"]["spec"])


def api_container() -> dict[str, Any]:
    (container,) = pod_spec("Deployment/forecast-api")["containers"]
    return dict(container)


def test_yamllint_passes() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "yamllint", "--strict", "-c", str(KUBERNETES / ".yamllint"), "."],
        cwd=KUBERNETES,
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_kustomization_lists_every_manifest() -> None:
    on_disk = {path.name for path in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert set(resource_files()) == on_disk


@pytest.mark.parametrize("name", resource_files())
def test_manifest_is_valid_against_the_kubernetes_schema(name: str) -> None:
    import kubernetes_validate

    for document in yaml.safe_load_all((KUBERNETES / name).read_text()):
        kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)


def test_the_api_is_ready_on_ready_and_alive_on_health() -> None:
    container = api_container()
    port = container["ports"][0]["name"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": port}
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": port}
    assert container["ports"][0]["containerPort"] == 8000


@pytest.mark.parametrize(
    "kind_name", ["Deployment/forecast-api", "Job/forecast-train"], ids=["api", "train"]
)
def test_every_container_has_requests_and_limits(kind_name: str) -> None:
    spec = pod_spec(kind_name)
    for container in [*spec.get("initContainers", []), *spec["containers"]]:
        assert set(container["resources"]) == {"requests", "limits"}
        assert set(container["resources"]["limits"]) == {"cpu", "memory"}


def test_the_api_reads_the_models_the_job_writes() -> None:
    job_spec, api_spec = pod_spec("Job/forecast-train"), pod_spec("Deployment/forecast-api")
    (train,) = job_spec["containers"]
    claims = {
        spec["volumes"][0]["persistentVolumeClaim"]["claimName"] for spec in (job_spec, api_spec)
    }
    assert claims == {"forecast-models"}
    assert "PersistentVolumeClaim/forecast-models" in resources()
    out = train["command"][train["command"].index("--out") + 1]
    settings = resources()["ConfigMap/forecast-settings"]["data"]
    assert settings["FORECAST_MODEL_DIR"] == out
    mount = next(m for m in api_container()["volumeMounts"] if m["name"] == "models")
    assert mount == {"name": "models", "mountPath": out, "readOnly": True}


def test_the_api_keys_come_from_the_secret() -> None:
    (variable,) = (e for e in api_container()["env"] if e["name"] == "FORECAST_API_KEYS")
    reference = variable["valueFrom"]["secretKeyRef"]
    secret = resources()[f"Secret/{reference['name']}"]
    assert reference["key"] in secret["stringData"]


def test_the_placeholder_api_key_is_refused_so_nothing_serves_until_it_is_set() -> None:
    placeholder = resources()["Secret/forecast-api-keys"]["stringData"]["FORECAST_API_KEYS"]
    with pytest.raises(ValueError, match="sha256: must be followed by 64 hex digits"):
        Settings(api_keys=placeholder)


def test_the_configured_settings_are_accepted() -> None:
    data = resources()["ConfigMap/forecast-settings"]["data"]
    fields = {
        name.removeprefix("FORECAST_").lower(): value
        for name, value in data.items()
        if name.startswith("FORECAST_")
    }
    settings = Settings.model_validate(fields)
    assert settings.store == "redis" and settings.redis_min_replicas == 1


@pytest.mark.parametrize(
    "kind_name",
    ["Service/forecast-api", "PodDisruptionBudget/forecast-api"],
    ids=["service", "pdb"],
)
def test_selectors_match_the_api_pods(kind_name: str) -> None:
    spec = resources()[kind_name]["spec"]
    selector = spec["selector"].get("matchLabels", spec["selector"])
    labels = resources()["Deployment/forecast-api"]["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_the_autoscaler_scales_the_api_deployment() -> None:
    target = resources()["HorizontalPodAutoscaler/forecast-api"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", "forecast-api")


def test_the_service_sends_traffic_to_the_api_port() -> None:
    (port,) = resources()["Service/forecast-api"]["spec"]["ports"]
    assert port["targetPort"] == api_container()["ports"][0]["name"]


def test_the_image_is_the_one_the_dockerfile_builds() -> None:
    (image,) = kustomization()["images"]
    names = {api_container()["image"], pod_spec("Job/forecast-train")["containers"][0]["image"]}
    assert names == {image["name"]}
