"""The Kubernetes and Compose manifests validate offline (Kubernetes' JSON schemas, strict, and
the Compose specification's), agree with the code, and a broken copy of each fails the check."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from deploy.manifests import (
    COMPOSE_FILE,
    K8S_DIR,
    check_all,
    compose_schema_errors,
    interpolate,
    k8s_schema_errors,
    load_documents,
    settings_from_env,
)


def test_the_shipped_manifests_pass_every_check():
    assert check_all() == []


def test_every_object_is_checked():
    kinds = sorted(d["kind"] for _, d in load_documents(K8S_DIR.glob("*.yaml")))
    assert kinds == ["ConfigMap", "Deployment", "Deployment", "Deployment", "Deployment", "Deployment", "Job",
                     "PersistentVolumeClaim", "Secret"]  # fmt: skip


@pytest.fixture
def copy(tmp_path: Path) -> Path:
    """A copy of deploy/k8s and deploy/compose to break."""
    shutil.copytree(K8S_DIR, tmp_path / "k8s")
    shutil.copytree(COMPOSE_FILE.parent, tmp_path / "compose")
    return tmp_path


def edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, f"{old!r} not in {path.name}"
    path.write_text(text.replace(old, new, 1))


def problems(copy: Path) -> list[str]:
    return check_all(copy / "k8s", copy / "compose" / "compose.yaml")


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        # schema: a misspelt field (strict), a wrong type, a missing required field
        ("k8s/streams.yaml", "readinessProbe:", "readinesProbe:", "'readinesProbe' was unexpected"),
        ("k8s/streams.yaml", "replicas: 2", "replicas: two", "'two' is not of type 'integer'"),
        ("k8s/sink.yaml", "      containers:\n", "      initContainers:\n", "'containers' is a required property"),
        # code: an unknown setting, a bad value, readiness on the wrong port, a service without a Deployment
        ("k8s/configmap.yaml", "DRIFT_EVENTS_PARTITIONS:", "DRIFT_EVENT_PARTITIONS:", "DRIFT_EVENT_PARTITIONS"),
        ("k8s/configmap.yaml", 'DRIFT_LOG_FORMAT: "json"', 'DRIFT_LOG_FORMAT: "xml"', "log_format"),
        ("k8s/router.yaml", "containerPort: 9462", "containerPort: 9460", "router serves /metrics on 9462"),
        ("k8s/sink.yaml", '"deploy.services", "sink"', '"deploy.services", "sinks"', "runs none of"),
        ("k8s/retrain.yaml", "claimName: driftwatch-models", "claimName: driftwatch-models\n        - name: x\n          emptyDir: {}", ""),
    ],
    ids=["misspelt-field", "wrong-type", "required", "unknown-setting", "bad-value", "probe-port", "no-sink", "extra-volume-ok"],
)  # fmt: skip
def test_a_broken_kubernetes_manifest_fails(copy, file, old, new, expected):
    edit(copy / file, old, new)
    found = problems(copy)
    if not expected:  # a harmless edit: still valid, so the check does not fail on everything
        assert found == []
        return
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("file", "old", "new", "expected"),
    [
        ("compose/compose.yaml", "    command: [\"python\", \"-m\", \"deploy.services\", \"router\"]",
         "    comand: [\"python\", \"-m\", \"deploy.services\", \"router\"]", "'comand' was unexpected"),
        ("compose/compose.yaml", "restart: unless-stopped", "restart: [unless-stopped]", "is not of type 'string'"),
        ("compose/compose.yaml", "127.0.0.1:9461/metrics", "127.0.0.1:9460/metrics", "does not ask http://127.0.0.1:9461"),
        ("compose/drift.env", "DRIFT_EVENTS_PARTITIONS=6", "DRIFT_EVENTS_PARTITIONS=0", "events_partitions"),
        ("compose/drift.env", "DRIFT_PROGRESS=off", "DRIFT_PROGRES=off", "DRIFT_PROGRES"),
    ],
    ids=["misspelt-key", "wrong-type", "health-port", "bad-value", "unknown-setting"],
)  # fmt: skip
def test_a_broken_compose_file_fails(copy, file, old, new, expected):
    edit(copy / file, old, new)
    found = problems(copy)
    assert any(expected in p for p in found), found


def test_the_validators_see_the_schemas_themselves():
    """Not a check of our files: that the validators judge a bare object as the API would."""
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {"containers": [{"name": "c"}]}}
    assert k8s_schema_errors([(Path("pod.yaml"), pod)]) == []
    pod["spec"]["containers"][0]["imagePullPolicy"] = 3
    assert k8s_schema_errors([(Path("pod.yaml"), pod)])
    assert compose_schema_errors({"services": {"a": {"image": "x"}}}) == []
    assert compose_schema_errors({"services": {"a": {"image": "x", "restart": ["always"]}}})
    assert compose_schema_errors(yaml.safe_load("services: [a, b]"))


def test_settings_from_env_refuses_unknown_keys_and_interpolation_needs_required_variables():
    assert settings_from_env({"DRIFT_EVENTS_PARTITIONS": "12"}).events_partitions == 12
    with pytest.raises(ValueError, match="DRIFT_NOPE"):
        settings_from_env({"DRIFT_NOPE": "1"})
    assert interpolate("a${X:-b}c${Y}", {"Y": "y"}) == "abcy"
    with pytest.raises(ValueError, match="set it"):
        interpolate("${P:?set it}", {})
