"""Checks of the deployment manifests in deploy/k8s and deploy/compose, without a cluster.

Two layers. The schema: every Kubernetes object against the API's own JSON schemas for the
named Kubernetes versions (``kubernetes-validate``, which ships them: nothing is fetched), strict,
so an unknown or misspelt field fails as it would on ``kubectl apply --validate=strict``; the
Compose file against the Compose specification's schema (vendored by ``check-jsonschema``). Then
the code: the DRIFT_* settings the manifests hand over must load into the settings model (a
misspelt key or a bad value fails here, not at a pod's start), every service has a Deployment
and a Compose service that run it, and each readiness check asks the port the service really
serves its metrics on.

Both validators are test dependencies (``.[test]``), imported when a check runs.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml

from schemas.settings import Settings

ROOT = Path(__file__).resolve().parent
K8S_DIR, COMPOSE_FILE = ROOT / "k8s", ROOT / "compose" / "compose.yaml"
K8S_VERSIONS = ("1.29.0", "1.37.0")  # an older release still in service, and the newest the validator knows
SERVICE_COMMAND = ["python", "-m", "deploy.services"]


def load_documents(paths: Iterable[Path]) -> list[tuple[Path, dict[str, Any]]]:
    """(file, object) for every YAML document of ``paths`` (empty documents skipped)."""
    return [(p, doc) for p in sorted(paths) for doc in yaml.safe_load_all(p.read_text()) if doc is not None]


def k8s_schema_errors(docs: Iterable[tuple[Path, dict[str, Any]]], versions: Iterable[str] = K8S_VERSIONS) -> list[str]:
    """One line per object that does not validate against a version's schema (strict)."""
    import kubernetes_validate

    errors = []
    for path, doc in docs:
        name = f"{path.name}: {doc.get('kind', '?')}/{(doc.get('metadata') or {}).get('name', '?')}"
        for version in versions:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.path)
                errors.append(f"{name} (Kubernetes {version}) at {where or '.'}: {exc.message}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{name}: no schema for {exc} in Kubernetes {version}")
    return errors


def compose_schema_errors(doc: Mapping[str, Any]) -> list[str]:
    """One line per violation of the Compose specification's JSON schema."""
    from importlib.resources import files

    import jsonschema

    schema = json.loads((files("check_jsonschema.builtin_schemas.vendor") / "compose-spec.json").read_text())
    cls = jsonschema.validators.validator_for(schema)
    validator = cls(schema, format_checker=cls.FORMAT_CHECKER)
    return [
        f"{'/'.join(str(p) for p in e.absolute_path) or '.'}: {e.message}"
        for e in sorted(validator.iter_errors(doc), key=lambda e: list(map(str, e.absolute_path)))
    ]


def settings_from_env(env: Mapping[str, str]) -> Settings:
    """The settings model from DRIFT_* variables, refusing unknown ones (a typo is an error)."""
    unknown = sorted(k for k in env if not k.startswith("DRIFT_") or k[6:].lower() not in Settings.model_fields)
    if unknown:
        raise ValueError(f"not settings of schemas/settings.py: {', '.join(unknown)}")
    return Settings(**{k[6:].lower(): v for k, v in env.items()})


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines of a Compose env file (comments and blank lines skipped)."""
    pairs = {}
    for line in path.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, sep, value = line.partition("=")
            if not sep:
                raise ValueError(f"{path.name}: not KEY=VALUE: {line!r}")
            pairs[key.strip()] = value.strip()
    return pairs


def interpolate(value: str, variables: Mapping[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:-default} and ${VAR:?message}, enough to load the settings."""

    def one(m: re.Match[str]) -> str:
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        if name in variables:
            return variables[name]
        if op == ":?":
            raise ValueError(f"compose needs {name}: {arg}")
        return arg

    return re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:-|:\?)?([^}]*)\}", one, value)


def _metrics_port(settings: Settings, service: str) -> int:
    from runtime.metrics import service_port

    port = service_port(settings, service)
    if port is None:
        raise ValueError("DRIFT_METRICS_PORT is 0: readiness needs the metrics endpoint")
    return port


def k8s_code_errors(docs: list[tuple[Path, dict[str, Any]]], services: Iterable[str]) -> list[str]:
    """The Kubernetes objects against the code: settings, one Deployment per service, probes, volumes."""
    objects = {(d.get("kind"), d["metadata"]["name"]): d for _, d in docs}
    config = [d for (kind, _), d in objects.items() if kind == "ConfigMap"]
    secrets = [d for (kind, _), d in objects.items() if kind == "Secret"]
    if len(config) != 1 or len(secrets) != 1:
        return [f"expected one ConfigMap and one Secret, found {len(config)} and {len(secrets)}"]
    env = {**config[0].get("data", {}), **secrets[0].get("stringData", {})}
    try:
        settings = settings_from_env(env)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        return [f"ConfigMap + Secret settings: {exc}"]
    errors = []
    names = {"ConfigMap": config[0]["metadata"]["name"], "Secret": secrets[0]["metadata"]["name"]}
    run: set[str] = set()
    for (kind, name), d in objects.items():
        if kind != "Deployment":
            continue
        try:
            errors += _deployment_errors(name, d, settings, services, names, run)
        except (KeyError, TypeError, ValueError) as exc:  # the schema check names what is wrong
            errors.append(f"Deployment {name}: malformed ({type(exc).__name__}: {exc})")
    missing = sorted(set(services) - run)
    if missing:
        errors.append(f"no Deployment runs {', '.join(missing)}")
    return errors


def _deployment_errors(
    name: str, d: dict[str, Any], settings: Settings, services: Iterable[str], names: dict[str, str], run: set[str]
) -> list[str]:
    """One Deployment: it runs a service, with the settings, on its metrics port, registry on a PVC."""
    errors: list[str] = []
    pod = d["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container.get("command", [])
    if command[:3] != SERVICE_COMMAND or len(command) != 4 or command[3] not in services:
        errors.append(f"Deployment {name}: command {command} runs none of {', '.join(services)}")
        return errors
    service = command[3]
    run.add(service)
    refs = {("ConfigMap", e["configMapRef"]["name"]) for e in container.get("envFrom", []) if "configMapRef" in e}
    refs |= {("Secret", e["secretRef"]["name"]) for e in container.get("envFrom", []) if "secretRef" in e}
    if refs != {("ConfigMap", names["ConfigMap"]), ("Secret", names["Secret"])}:
        errors.append(f"Deployment {name}: envFrom {sorted(refs)} is not the ConfigMap and Secret {names}")
    port = _metrics_port(settings, service)
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    probe = (container.get("readinessProbe") or {}).get("httpGet") or {}
    probe_port = ports.get(probe.get("port"), probe.get("port"))
    if probe.get("path") != "/metrics" or probe_port != port:
        errors.append(f"Deployment {name}: readiness asks {probe.get('path')} on {probe_port}, "
                      f"{service} serves /metrics on {port}")  # fmt: skip
    if service == "retrain":
        mounts = {m["mountPath"]: m["name"] for m in container.get("volumeMounts", [])}
        volume = next((v for v in pod.get("volumes", []) if v["name"] == mounts.get(str(settings.registry_dir))), {})
        if "persistentVolumeClaim" not in volume:
            errors.append(f"Deployment {name}: the registry {settings.registry_dir} is not on a persistent volume")
    return errors


def compose_code_errors(doc: Mapping[str, Any], env_dir: Path, services: Iterable[str]) -> list[str]:
    """The Compose file against the code: each service's settings, command and health check port."""
    errors, seen = [], set()
    for name, svc in doc.get("services", {}).items():
        command = svc.get("command") or []
        if command[:3] != SERVICE_COMMAND:
            continue
        service = command[3] if len(command) == 4 else None
        if service not in services:
            errors.append(f"compose service {name}: command {command} runs none of {', '.join(services)}")
            continue
        seen.add(service)
        env: dict[str, str] = {}
        for f in svc.get("env_file", []):
            env.update(read_env_file(env_dir / f))
        env.update({k: str(v) for k, v in (svc.get("environment") or {}).items()})
        try:
            settings = settings_from_env({k: interpolate(v, {"CLICKHOUSE_PASSWORD": "x"}) for k, v in env.items()})
        except ValueError as exc:
            errors.append(f"compose service {name} settings: {exc}")
            continue
        check = " ".join((svc.get("healthcheck") or {}).get("test", []))
        wanted = f"http://127.0.0.1:{_metrics_port(settings, service)}/metrics"
        if wanted not in check:
            errors.append(f"compose service {name}: health check {check!r} does not ask {wanted}")
    missing = sorted(set(services) - seen)
    if missing:
        errors.append(f"no compose service runs {', '.join(missing)}")
    return errors


def check_all(k8s_dir: Path = K8S_DIR, compose_file: Path = COMPOSE_FILE) -> list[str]:
    """Every problem of both sets of manifests, schema and code; empty when they are fine."""
    from deploy.services import SERVICES

    docs = load_documents(k8s_dir.glob("*.yaml"))
    compose = yaml.safe_load(compose_file.read_text())
    return [
        *k8s_schema_errors(docs),
        *k8s_code_errors(docs, SERVICES),
        *(f"{compose_file.name}: {e}" for e in compose_schema_errors(compose)),
        *(f"{compose_file.name}: {e}" for e in compose_code_errors(compose, compose_file.parent, SERVICES)),
    ]
