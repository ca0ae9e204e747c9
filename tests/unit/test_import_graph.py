"""No import circle in workers/, db/ and domain/, and the console and the CLI's entry
points do not import each other (issue 25: use cases both need live in services/).

The graph counts lazy imports inside functions as well as module-level ones: a circle
hidden behind a function-local import is still a circle, it only fails later.
"""

from __future__ import annotations

import pytest

from tests.unit.import_graph import Edge, cycles, edges

pytestmark = pytest.mark.unit


def _room(module: str) -> str:
    return ".".join(module.split(".")[:2])


def test_no_import_cycle() -> None:
    found = cycles(edges())
    described = "\n\n".join(
        f"circle among {', '.join(members)}:\n" + "\n".join(f"  {edge}" for edge in cycle)
        for members, cycle in found
    )
    assert not found, f"{len(found)} import circle(s), a shortest cycle of each:\n{described}"


def test_the_finder_sees_a_cycle_through_a_function_local_import() -> None:
    # The check above can fail: a circle closed by a lazy import is reported.
    here = edges()[0].path
    graph = [Edge("a.x", "a.y", here, 1), Edge("a.y", "a.z", here, 2), Edge("a.z", "a.x", here, 3)]
    [(members, cycle)] = cycles(graph)
    assert members == ["a.x", "a.y", "a.z"]
    assert [e.target for e in cycle] == ["a.y", "a.z", "a.x"]


@pytest.mark.parametrize(
    ("source", "target"),
    [("workers.console", "workers.entrypoints"), ("workers.entrypoints", "workers.console")],
)
def test_console_and_entrypoints_do_not_import_each_other(source: str, target: str) -> None:
    crossing = [str(e) for e in edges() if _room(e.source) == source and _room(e.target) == target]
    assert not crossing, f"{source} imports {target}:\n  " + "\n  ".join(crossing)
