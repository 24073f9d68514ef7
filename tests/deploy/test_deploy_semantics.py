"""What the schemas cannot see: the deployment files agree with the code and with each other.

Every RIPPLECAST_ variable is a setting and loads; probes ask /healthz and /readyz; a stopping
node gets longer than its preStop pause, drain and shutdown; images are pinned; containers run as
a non-root uid on a read-only root; every workload has its Services, PodDisruptionBudget and
autoscaler; compose starts nodes after the migration with secrets from .env only; CI's service
containers are where the tests look for them.
"""

from __future__ import annotations

import re
from typing import Any

import pytest
from deploy_support import (
    COMPOSE,
    DOCKERIGNORE,
    GRAFANA,
    PROMETHEUS,
    ROOT,
    SETTINGS_PREFIX,
    WORKLOAD_KINDS,
    Manifest,
    compose_model,
    container_environment,
    containers,
    dockerfile_env,
    dockerfile_instructions,
    env_example,
    example_secret,
    final_stage,
    image_tag,
    load_workflow,
    load_yaml,
    node_container,
    of_kind,
    one,
    parse_quantity,
    pod_spec,
    ripplecast_services,
    settings_map,
)

from ripplecast.config import NodeRole, Settings

PENDING_SETTINGS: set[str] = set()
"""Settings the deployment files may use before Settings has them (none now)."""

SECRET_NAME = re.compile(r"PASSWORD|SECRET|DATABASE_URL|ACCESS_KEY")


def settings_of(environment: dict[str, str]) -> set[str]:
    return {
        name.removeprefix(SETTINGS_PREFIX).lower()
        for name in environment
        if name.startswith(SETTINGS_PREFIX)
    }


def workloads() -> list[Manifest]:
    return of_kind(*WORKLOAD_KINDS)


def node_workloads() -> list[Manifest]:
    """The workloads that run `ripplecast serve` (all but the migration Job)."""
    return [w for w in workloads() if w.kind != "Job"]


def drain_seconds(environment: dict[str, str]) -> float:
    """How long a node drains, then closes, after SIGTERM, with `environment`'s settings."""
    fields = Settings.model_fields
    drain = environment.get("RIPPLECAST_DRAIN_TIMEOUT_SECONDS")
    if drain is None:
        assert "drain_timeout_seconds" in fields, "the drain timeout must be set explicitly"
        drain = str(fields["drain_timeout_seconds"].default)
    shutdown = environment.get(
        "RIPPLECAST_SHUTDOWN_TIMEOUT", str(fields["shutdown_timeout"].default)
    )
    return float(drain) + float(shutdown)


# --- settings ----------------------------------------------------------------------------------


def every_environment() -> dict[str, dict[str, str]]:
    """Each place that gives nodes RIPPLECAST_ variables, by a name for messages."""
    places = {"ConfigMap ripplecast-settings": settings_map(), "example Secret": example_secret()}
    for workload in workloads():
        for container in containers(workload):
            places[f"{workload} container {container['name']}"] = {
                e["name"]: "" for e in container.get("env", [])
            }
    for name, service in compose_model()["services"].items():
        places[f"compose service {name}"] = service.get("environment", {})
    return places


def test_every_ripplecast_variable_names_a_setting() -> None:
    known = set(Settings.model_fields) | PENDING_SETTINGS
    unknown = {
        place: sorted(settings_of(environment) - known)
        for place, environment in every_environment().items()
        if settings_of(environment) - known
    }
    assert unknown == {}


@pytest.mark.parametrize("source", ["kubernetes", "compose"], ids=["kubernetes", "compose"])
def test_every_node_environment_loads_as_settings(
    source: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    environments: dict[str, dict[str, str]] = {}
    if source == "kubernetes":
        for workload in workloads():
            for container in containers(workload):
                environments[f"{workload}/{container['name']}"] = container_environment(container)
    else:
        for name, service in compose_model()["services"].items():
            if str(service.get("image", "")).startswith("ghcr.io/ripplecast/"):
                environments[name] = service["environment"]
    assert environments
    roles = set()
    for place, environment in environments.items():
        for name in [*Settings.model_fields, "config"]:
            monkeypatch.delenv(SETTINGS_PREFIX + name.upper(), raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        settings = Settings()  # raises, naming the field, if a value does not parse
        roles.add(settings.role)
        assert settings.database_url.startswith("postgresql://"), place
        assert settings.secret_key is not None, place
        assert settings.storage_url.startswith("s3://"), place
        if "RIPPLECAST_ROLE" in environment:
            assert settings.cluster_node_id, place
            assert settings.cluster_internal_http_url.endswith(f":{settings.http_port}"), place
    assert {NodeRole.ORIGIN, NodeRole.EDGE, NodeRole.WEB, NodeRole.WORKER} <= roles


def test_node_identity_comes_from_the_pod() -> None:
    for workload in node_workloads():
        env = {e["name"]: e for e in node_container(workload)["env"]}
        assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
        assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
        assert env["RIPPLECAST_CLUSTER_NODE_ID"]["value"] == "$(POD_NAME)"
        assert env["RIPPLECAST_CLUSTER_INTERNAL_HTTP_URL"]["value"] == "http://$(POD_IP):8080"
        names = list(env)
        # The kubelet resolves $(NAME) only from variables defined earlier in the list.
        assert names.index("POD_NAME") < names.index("RIPPLECAST_CLUSTER_NODE_ID")
        assert names.index("POD_IP") < names.index("RIPPLECAST_CLUSTER_INTERNAL_HTTP_URL")


# --- probes and stopping -----------------------------------------------------------------------


def test_probes_ask_healthz_for_life_and_readyz_for_traffic() -> None:
    http_port = int(settings_map()["RIPPLECAST_HTTP_PORT"])
    for workload in node_workloads():
        container = node_container(workload)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["http"] == http_port, workload
        probes = {
            kind: container[kind]["httpGet"]
            for kind in ("startupProbe", "livenessProbe", "readinessProbe")
        }
        assert probes["livenessProbe"]["path"] == "/healthz", workload
        assert probes["startupProbe"]["path"] == "/healthz", workload
        assert probes["readinessProbe"]["path"] == "/readyz", workload
        assert {p["port"] for p in probes.values()} == {"http"}, workload


def prestop_seconds(container: dict[str, Any]) -> float:
    hook = container.get("lifecycle", {}).get("preStop")
    if hook is None:
        return 0.0
    command = hook["exec"]["command"]
    assert command[0] == "sleep" and len(command) == 2, command
    return float(command[1])


def test_a_stopping_pod_gets_longer_than_its_pause_drain_and_shutdown() -> None:
    for workload in node_workloads():
        container = node_container(workload)
        needed = prestop_seconds(container) + drain_seconds(container_environment(container))
        grace = pod_spec(workload)["terminationGracePeriodSeconds"]
        assert grace > needed, f"{workload}: grace {grace} s, needs more than {needed} s"


def test_pods_that_take_traffic_pause_before_draining() -> None:
    for workload in node_workloads():
        if workload.name != "ripplecast-worker":
            assert prestop_seconds(node_container(workload)) >= 5, workload


def test_a_stopping_compose_node_gets_longer_than_its_drain_and_shutdown() -> None:
    assert ("STOPSIGNAL", "SIGTERM") in final_stage()
    for name, service in ripplecast_services().items():
        grace = service["stop_grace_period"]
        assert grace.endswith("s"), grace
        assert float(grace[:-1]) > drain_seconds(service["environment"]), name


# --- images and users --------------------------------------------------------------------------


def test_every_image_is_pinned_to_a_tag() -> None:
    images = [
        (f"{workload}/{c['name']}", c["image"])
        for workload in workloads()
        for c in containers(workload)
    ]
    images += [(f"compose {n}", s["image"]) for n, s in compose_model()["services"].items()]
    images += [
        ("Dockerfile", args.split()[0])
        for name, args in dockerfile_instructions()
        if name == "FROM"
    ]
    workflow = load_workflow()
    for job in workflow["jobs"].values():
        images += [(f"workflow {n}", s["image"]) for n, s in job.get("services", {}).items()]
    assert len(images) > 20
    for place, image in images:
        assert image_tag(image) not in (None, "latest"), f"{place}: {image}"
    kustomization = load_yaml(ROOT / "deploy" / "kubernetes" / "kustomization.yaml")
    for entry in kustomization["images"]:
        assert entry["newTag"] != "latest"


def dockerfile_uid() -> int:
    (user,) = [args for name, args in final_stage() if name == "USER"]
    return int(user.split(":")[0])


def test_containers_run_as_a_non_root_uid_on_a_read_only_root() -> None:
    uid = dockerfile_uid()
    assert uid != 0
    data_dir = dockerfile_env(final_stage())["RIPPLECAST_DATA_DIR"]
    for workload in workloads():
        spec = pod_spec(workload)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True, workload
        assert pod["runAsUser"] == uid and pod["fsGroup"] == uid, workload
        assert pod["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert spec["automountServiceAccountToken"] is False, workload
        volumes = {v["name"]: v for v in spec["volumes"]}
        for container in containers(workload):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, workload
            assert context["readOnlyRootFilesystem"] is True, workload
            assert context["capabilities"]["drop"] == ["ALL"], workload
            mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
            # Writable places are emptyDirs: the data dir and /tmp.
            assert {data_dir, "/tmp"} <= set(mounts), workload
            assert all("emptyDir" in volumes[name] for name in mounts.values()), workload
    for name, service in ripplecast_services().items():
        assert service["read_only"] is True, name
        assert service["cap_drop"] == ["ALL"], name
        assert "user" not in service, name  # the image's non-root USER
        assert any(v.endswith(f":{data_dir}") for v in service["volumes"]), name


def test_every_container_has_requests_and_limits() -> None:
    for workload in workloads():
        for container in containers(workload):
            resources = container["resources"]
            for resource in ("cpu", "memory"):
                request = parse_quantity(resources["requests"][resource])
                limit = parse_quantity(resources["limits"][resource])
                assert 0 < request <= limit, f"{workload}/{container['name']} {resource}"


def test_the_edge_disk_cache_fits_its_volume() -> None:
    edge = one("Deployment", "ripplecast-edge")
    volumes = {v["name"]: v for v in pod_spec(edge)["volumes"]}
    cache_bytes = int(settings_map()["RIPPLECAST_VOD_EDGE_CACHE_DISK_BYTES"])
    assert cache_bytes < parse_quantity(volumes["data"]["emptyDir"]["sizeLimit"])


# --- services, budgets, autoscalers ------------------------------------------------------------


def labels_of(workload: Manifest) -> dict[str, str]:
    labels: dict[str, str] = workload.obj["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def test_every_service_reaches_named_ports_of_a_workload() -> None:
    for service in of_kind("Service"):
        targets = [
            w for w in node_workloads() if selects(service.obj["spec"]["selector"], labels_of(w))
        ]
        assert len(targets) == 1, service
        ports = {p["name"] for p in node_container(targets[0])["ports"]}
        for port in service.obj["spec"]["ports"]:
            assert port["targetPort"] in ports, service


def test_each_role_has_the_services_budget_and_autoscaler_it_needs() -> None:
    services = {s.name: s.obj["spec"] for s in of_kind("Service")}
    origin = one("StatefulSet", "ripplecast-origin")
    assert services[origin.obj["spec"]["serviceName"]]["clusterIP"] == "None"
    assert services["ripplecast-origin-rtmp"]["type"] in ("LoadBalancer", "NodePort")
    assert {p["name"] for p in services["ripplecast-edge"]["ports"]} == {"http"}
    assert {p["name"] for p in services["ripplecast-edge-rtmp"]["ports"]} == {"rtmp"}
    assert {p["name"] for p in services["ripplecast-web"]["ports"]} == {"http"}
    budgets = of_kind("PodDisruptionBudget")
    scalers = {
        s.obj["spec"]["scaleTargetRef"]["name"]: s for s in of_kind("HorizontalPodAutoscaler")
    }
    for workload in node_workloads():
        covering = [
            b
            for b in budgets
            if selects(b.obj["spec"]["selector"]["matchLabels"], labels_of(workload))
        ]
        assert len(covering) == 1, workload
        if workload.kind == "Deployment":
            scaler = scalers[workload.name].obj["spec"]
            assert scaler["scaleTargetRef"]["kind"] == "Deployment"
            (metric,) = scaler["metrics"]
            assert metric["resource"]["name"] == "cpu"
            assert 1 <= scaler["minReplicas"] < scaler["maxReplicas"]
            # CPU utilisation is measured against requests.
            assert "cpu" in node_container(workload)["resources"]["requests"]
    assert set(scalers) == {"ripplecast-edge", "ripplecast-web", "ripplecast-worker"}


def test_nodes_wait_for_the_migration_job() -> None:
    job = one("Job", "ripplecast-migrate")
    (migrate,) = pod_spec(job)["containers"]
    assert migrate["args"] == ["db", "upgrade"]
    for workload in node_workloads():
        (init,) = pod_spec(workload)["initContainers"]
        assert "ripplecast db check" in " ".join(init["command"]), workload
        assert init["image"] == node_container(workload)["image"] == migrate["image"]


# --- secrets -----------------------------------------------------------------------------------


def test_the_example_secret_holds_only_placeholders() -> None:
    assert example_secret()
    for name, value in example_secret().items():
        assert "CHANGE-ME" in value, name
    for name in settings_map():
        assert not SECRET_NAME.search(name), f"{name} belongs in the Secret"
    for name, value in env_example().items():
        if SECRET_NAME.search(name):
            assert value.startswith("CHANGE-ME"), name


def test_compose_takes_every_secret_from_the_env_file() -> None:
    raw = load_yaml(COMPOSE)
    lines = [line for line in COMPOSE.read_text().splitlines() if not line.lstrip().startswith("#")]
    required = set(re.findall(r"\$\{([A-Z_]+):\?", "\n".join(lines)))
    assert {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "RIPPLECAST_SECRET_KEY"} <= required
    assert required <= set(env_example())
    environments = {"x-ripplecast-settings": raw["x-ripplecast-settings"]}
    environments |= {name: s.get("environment", {}) for name, s in raw["services"].items()}
    for name, environment in environments.items():
        for key, value in environment.items():
            if SECRET_NAME.search(key):
                assert "${" in str(value), f"{name}: {key} is written inline"


# --- compose -----------------------------------------------------------------------------------


def test_compose_runs_the_whole_cluster_with_healthchecks() -> None:
    services = compose_model()["services"]
    roles = {s["environment"]["RIPPLECAST_ROLE"] for s in ripplecast_services().values()}
    assert roles == {"origin", "edge", "worker", "web"}
    assert (
        sum(
            1
            for s in ripplecast_services().values()
            if s["environment"]["RIPPLECAST_ROLE"] == "edge"
        )
        == 2
    )
    for needed in ("postgres", "redis", "minio", "haproxy", "prometheus", "grafana"):
        assert needed in services
    one_shots = {name for name, s in services.items() if s.get("restart") == "no"}
    assert one_shots == {"migrate", "createbucket"}
    for name, service in services.items():
        if name not in one_shots:
            test = service["healthcheck"]["test"]
            assert test[0] in ("CMD", "CMD-SHELL") and len(test) > 1, name


def test_compose_nodes_start_after_the_migration_and_the_bucket() -> None:
    services = compose_model()["services"]
    assert services["migrate"]["command"] == ["db", "upgrade"]
    assert services["migrate"]["depends_on"]["postgres"]["condition"] == "service_healthy"
    for name, service in ripplecast_services().items():
        depends = service["depends_on"]
        assert depends["migrate"]["condition"] == "service_completed_successfully", name
        assert depends["createbucket"]["condition"] == "service_completed_successfully", name
        bucket = service["environment"]["RIPPLECAST_STORAGE_URL"].split("/")[2]
        assert f"local/{bucket}" in services["createbucket"]["command"][0]


def test_compose_nodes_trust_only_haproxy() -> None:
    haproxy = compose_model()["services"]["haproxy"]
    address = haproxy["networks"]["ripplecast"]["ipv4_address"]
    for name, service in ripplecast_services().items():
        assert service["environment"]["RIPPLECAST_TRUSTED_PROXIES"] == f'["{address}"]', name


def test_prometheus_scrapes_every_node_and_grafana_reads_prometheus() -> None:
    config = load_yaml(PROMETHEUS)
    targets = {
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for group in job["static_configs"]
        for target in group["targets"]
    }
    assert targets == {f"{name}:8080" for name in ripplecast_services()}
    datasources = load_yaml(GRAFANA / "provisioning" / "datasources" / "prometheus.yml")
    assert datasources["datasources"][0]["url"] == "http://prometheus:9090"
    services = compose_model()["services"]
    assert "./prometheus:/etc/prometheus:ro" in services["prometheus"]["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in services["grafana"]["volumes"]


# --- the image ---------------------------------------------------------------------------------


def test_the_image_is_built_as_the_project_says() -> None:
    instructions = dockerfile_instructions()
    text = " ".join(f"{name} {args}" for name, args in instructions)
    assert "pip install -c requirements.lock ." in text
    assert "npm ci --prefix web" in text
    stage = final_stage()
    assert stage[0] == ("FROM", "python:3.11-slim-bookworm AS runtime")
    env = dockerfile_env(stage)
    vendor = env["RIPPLECAST_WEB_VENDOR_DIR"]
    assert any(
        n == "COPY" and a.startswith("--from=") and a.endswith(f" {vendor}") for n, a in stage
    )
    assert ("EXPOSE", "1935 8080") in stage
    assert ("VOLUME", f'["{env["RIPPLECAST_DATA_DIR"]}"]') in stage
    (healthcheck,) = [a for n, a in stage if n == "HEALTHCHECK"]
    assert "/healthz" in healthcheck and "python" in healthcheck
    assert any(n == "RUN" and "ffmpeg" in a for n, a in stage)


def dockerignore_allows(path: str) -> bool:
    """Whether .dockerignore lets `path` into the build context (its allowlist form: `*`, then
    `!` exceptions, then exclusions of caches)."""
    allowed = False
    for line in DOCKERIGNORE.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line == "*":
            allowed = False
        elif line.startswith("!"):
            pattern = line[1:].rstrip("/")
            if path == pattern or path.startswith(pattern + "/"):
                allowed = True
    return allowed


def test_dockerignore_lets_in_what_the_dockerfile_copies_and_no_more() -> None:
    sources = []
    for name, args in dockerfile_instructions():
        if name == "COPY" and not args.startswith("--from="):
            sources += [s.rstrip("/") for s in args.split()[:-1]]
    assert sources
    for source in sources:
        assert (ROOT / source).exists(), source
        assert dockerignore_allows(source), source
    for kept_out in (".git", ".venv", "web/node_modules", "tests", "data", "docs"):
        assert not dockerignore_allows(kept_out), kept_out


def test_every_runtime_dependency_is_pinned_in_the_lock() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    pinned = {
        line.split("==")[0].lower().replace("_", "-")
        for line in (ROOT / "requirements.lock").read_text().splitlines()
        if "==" in line
    }
    for requirement in project["dependencies"]:
        name = re.split(r"[\[<>=;! ]", requirement, maxsplit=1)[0].lower().replace("_", "-")
        assert name in pinned, requirement


# --- CI on the forge ---------------------------------------------------------------------------


def test_ci_service_containers_are_where_the_tests_look() -> None:
    from urllib.parse import urlsplit

    from databases import SERVER_URLS
    from support import REDIS

    services = load_workflow()["jobs"]["test"]["services"]
    expected = {"postgres": SERVER_URLS["postgresql"], "mariadb": SERVER_URLS["mariadb"]}
    expected["redis"] = REDIS
    for name, url in expected.items():
        parts = urlsplit(url)
        assert f"{parts.hostname}:{parts.port}:{parts.port}" in services[name]["ports"], name
    postgres = urlsplit(expected["postgres"])
    env = services["postgres"]["env"]
    assert postgres.username == "postgres" and postgres.password is None
    assert env["POSTGRES_HOST_AUTH_METHOD"] == "trust"
    assert env["POSTGRES_DB"] == postgres.path.lstrip("/")
    assert services["postgres"]["image"].split(":")[1].startswith("15")
    mariadb = urlsplit(expected["mariadb"])
    env = services["mariadb"]["env"]
    assert mariadb.username == "root" and mariadb.password is None
    assert env["MARIADB_ALLOW_EMPTY_ROOT_PASSWORD"] == "1"
    assert env["MARIADB_DATABASE"] == mariadb.path.lstrip("/")
    assert services["mariadb"]["image"] == "mariadb:10.11"
    assert services["redis"]["image"] == "redis:7"


def test_ci_runs_the_same_script_and_publishes_only_on_a_tag() -> None:
    workflow = load_workflow()
    triggers = workflow["on"]
    assert triggers["push"]["tags"] == ["v*"]
    assert workflow["permissions"] == {"contents": "read"}
    steps = workflow["jobs"]["test"]["steps"]
    assert any(step.get("run") == "bash .ci/run" for step in steps)
    image = workflow["jobs"]["image"]
    assert image["permissions"] == {"contents": "read", "packages": "write"}
    assert "test" in image["needs"]
    build = [s for s in image["steps"] if s.get("uses", "").startswith("docker/build-push-action")]
    assert build[0]["with"]["file"] == "deploy/docker/Dockerfile"
    assert build[0]["with"]["push"] == "${{ startsWith(github.ref, 'refs/tags/v') }}"
    login = [s for s in image["steps"] if s.get("uses", "").startswith("docker/login-action")]
    assert login[0]["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert login[0]["with"]["registry"] == "ghcr.io"
