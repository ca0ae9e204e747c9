"""The alert rules pass promtool (syntax and their unit tests), and the Grafana
dashboard and the rules use only metrics the workers export."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

MONITORING = Path(__file__).resolve().parents[2] / "docs" / "monitoring"
SOURCES = Path(__file__).resolve().parents[2] / "workers" / "observability"


def _promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("promtool is missing: scripts/test installs Debian's prometheus package")
        pytest.skip("promtool not installed (scripts/test installs it)")
    return path


def test_alert_rules_are_valid_and_fire_on_their_series() -> None:
    promtool = _promtool()
    for args in (["check", "rules", "alerts.yml"], ["test", "rules", "alerts_test.yml"]):
        proc = subprocess.run(
            [promtool, *args], cwd=MONITORING, capture_output=True, text=True, timeout=60
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert "SUCCESS" in proc.stdout


def _exported() -> set[str]:
    """Metric names our code defines, with the suffixes Prometheus adds."""
    names = set()
    for path in SOURCES.glob("*.py"):
        names.update(re.findall(r'"(emotionviz_[a-z_]+)"', path.read_text()))
    suffixed = {f"{n}{s}" for n in names for s in ("_bucket", "_count", "_sum", "_total")}
    return names | suffixed


def test_dashboard_and_rules_use_exported_metrics() -> None:
    exported = _exported()
    dashboard = json.loads((MONITORING / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs.append((MONITORING / "alerts.yml").read_text())
    used = {name for expr in exprs for name in re.findall(r"emotionviz_[a-z_]+", expr)}
    assert used, "no emotionviz metric referenced"
    assert used <= exported, f"not exported: {sorted(used - exported)}"
