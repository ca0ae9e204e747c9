"""docker-compose.yml, checked without a Docker engine: valid against the Compose
Specification's JSON Schema, starts with no .env and no variable set, runs only commands
the CLI has, stops cleanly, publishes metrics on loopback only."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from workers.entrypoints.cli import build_parser
from workers.entrypoints.commands.worker import worker_command
from workers.settings import Settings

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO_ROOT / "docker-compose.yml"
# Read by the image's own libraries rather than by Settings.
EXTERNAL_VARIABLES = {"dramatiq_prom_port"}
_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?P<op>:?[-?+])?(?P<arg>[^}]*)\}"
    r"|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation, strict: an unset variable without a default fails (Compose
    would warn and use an empty string), and so does ``${VAR:?message}``."""

    def substitute(match: re.Match[str]) -> str:
        if match.group("escaped"):
            return "$"
        name = match.group("braced") or match.group("plain")
        op, arg = match.group("op"), match.group("arg")
        current = env.get(name)
        unset = current is None or (current == "" and op is not None and op.startswith(":"))
        if op in ("-", ":-"):
            return arg if unset else str(current)
        if op in ("+", ":+"):
            return "" if unset else arg
        if unset:
            raise AssertionError(f"${{{name}}} is required: {arg or 'no default'}")
        return str(current)

    return _VARIABLE.sub(substitute, value)


def _walk(node: Any, env: dict[str, str]) -> Any:
    if isinstance(node, dict):
        return {key: _walk(value, env) for key, value in node.items()}
    if isinstance(node, list):
        return [_walk(value, env) for value in node]
    return interpolate(node, env) if isinstance(node, str) else node


@pytest.fixture(scope="module")
def raw() -> dict[str, Any]:
    document = yaml.safe_load(COMPOSE_FILE.read_text())
    assert isinstance(document, dict)
    return document


@pytest.fixture(scope="module")
def compose(raw: dict[str, Any]) -> dict[str, Any]:
    """As `docker compose config` would see it on a fresh clone: nothing set."""
    return dict(_walk(raw, {}))


def _ours(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Services running this project's image."""
    return {name: s for name, s in compose["services"].items() if "build" in s}


def _seconds(duration: str) -> float:
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(h|ms|m|s)", duration)
    assert parts and "".join(n + u for n, u in parts) == duration, duration
    return sum(float(n) * units[u] for n, u in parts)


def test_the_file_is_valid_against_the_compose_specification_schema() -> None:
    checker = Path(sys.executable).with_name("check-jsonschema")
    proc = subprocess.run(
        [str(checker), "--builtin-schema", "vendor.compose-spec", str(COMPOSE_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_it_starts_from_a_fresh_clone_with_no_env_file_and_nothing_set(
    raw: dict[str, Any], compose: dict[str, Any]
) -> None:
    # The interpolation above raised for any variable that has no default; what is left
    # must still be a valid Compose file.
    schema = json.loads(
        files("check_jsonschema.builtin_schemas.vendor").joinpath("compose-spec.json").read_text()
    )
    jsonschema.validators.validator_for(schema)(schema).validate(compose)
    for name, service in _ours(raw).items():
        for entry in service["env_file"]:
            assert entry["required"] is False, f"{name}: .env must stay optional"


def test_every_command_and_health_check_exists_in_the_cli(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in _ours(compose).items():
        argv = [str(a) for a in service["command"]]
        try:
            args = parser.parse_args(argv)
        except SystemExit:
            pytest.fail(f"{name}: `emotionviz {' '.join(argv)}` is not a command the CLI has")
        assert callable(args.handler)
        test = service.get("healthcheck", {}).get("test")
        if test:
            assert test[:2] == ["CMD", "emotionviz"], f"{name}: {test}"
            parser.parse_args(test[2:])  # exits (fails the test) if unknown


def test_long_running_services_stop_cleanly_and_report_health(compose: dict[str, Any]) -> None:
    argv = worker_command(Settings(_env_file=None), processes=1, threads=1, queues=None)  # type: ignore[call-arg]
    shutdown_s = int(argv[argv.index("--worker-shutdown-timeout") + 1]) / 1000
    long_running = {n: s for n, s in _ours(compose).items() if s.get("restart") != "no"}
    assert set(long_running) == {"worker", "intake-worker", "scheduler", "console"}
    for name, service in long_running.items():
        assert service["init"] is True, f"{name}: signals need an init as PID 1"
        assert service["healthcheck"]["test"][:3] == ["CMD", "emotionviz", "health"], name
        grace = _seconds(service["stop_grace_period"])
        if service["command"][0] == "worker":
            assert grace > shutdown_s, f"{name}: stop grace {grace}s <= shutdown {shutdown_s}s"


def test_metrics_are_published_on_loopback_only(compose: dict[str, Any]) -> None:
    published = {}
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            host_ip, host_port, container_port = str(port).split(":")
            assert host_ip == "127.0.0.1", f"{name} publishes {port} beyond this host"
            published[name] = (int(host_port), int(container_port))
    assert published == {
        "worker": (9191, 9191),
        "intake-worker": (9192, 9191),
        "console": (8088, 8088),
    }
    for name in ("worker", "intake-worker"):
        env = compose["services"][name]["environment"]
        assert env["METRICS_HOST"] == "0.0.0.0" and env["METRICS_PORT"] == "9191"
        assert compose["services"][name]["healthcheck"]["test"][-1] == "--worker"


def test_app_environment_names_only_real_settings(compose: dict[str, Any]) -> None:
    known = {name.upper() for name in Settings.model_fields} | EXTERNAL_VARIABLES
    for name, service in _ours(compose).items():
        unknown = set(service["environment"]) - known
        assert not unknown, f"{name} sets {unknown}: not settings (typo?)"


def test_interpolation_matches_compose_rules() -> None:
    env = {"SET": "x", "EMPTY": ""}
    assert interpolate("a${SET:-d}$$b", env) == "ax$b"
    assert interpolate("${EMPTY:-d}|${EMPTY-d}|${UNSET-d}", env) == "d||d"
    assert interpolate("${SET:+r}|${UNSET:+r}", env) == "r|"
    for strict in ("${UNSET}", "${EMPTY:?needed}", "$UNSET"):
        with pytest.raises(AssertionError, match="is required"):
            interpolate(strict, env)


def test_env_example_documents_the_compose_variables() -> None:
    example = (REPO_ROOT / ".env.example").read_text()
    names = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)", COMPOSE_FILE.read_text()))
    assert names == {
        "POSTGRES_PASSWORD",
        "WORKER_METRICS_HOST_PORT",
        "INTAKE_METRICS_HOST_PORT",
        "PROVIDER",
    }
    for name in names:
        assert re.search(rf"^{name}=", example, re.MULTILINE), f"{name} not in .env.example"


def test_the_stack_runs_the_real_models_unless_told_otherwise(raw: dict[str, Any]) -> None:
    """PROVIDER=auto with no key would run the offline placeholder providers and store
    their pictures as completed; the stack says gemini (a worker without a key exits 2),
    from a fresh clone and from a .env copied from .env.example alike."""
    example = (REPO_ROOT / ".env.example").read_text()
    (copied,) = re.findall(r"^PROVIDER=(\S+)", example, re.MULTILINE)
    assert copied == "gemini"
    for env, expected in (
        ({}, "gemini"),
        ({"PROVIDER": copied}, "gemini"),
        ({"PROVIDER": "local"}, "local"),
    ):
        services = _ours(dict(_walk(raw, env)))
        for name, service in services.items():
            assert service["environment"]["PROVIDER"] == expected, (name, env)
