"""Print the installed distributions a lock file does not list (for scripts/_bootstrap.sh).

Usage: python scripts/_stale_packages.py requirements/dev.txt
pip, the project itself and what pip needs to build it are never listed.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import distributions
from pathlib import Path

KEEP = {"pip", "setuptools", "wheel", "emotionviz-workers"}


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_names(lock: Path) -> set[str]:
    pin = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==")
    return {
        canonical(m.group(1)) for line in lock.read_text().splitlines() if (m := pin.match(line))
    }


def main() -> None:
    wanted = locked_names(Path(sys.argv[1])) | KEEP
    installed = {canonical(d.metadata["Name"]) for d in distributions() if d.metadata["Name"]}
    print(" ".join(sorted(installed - wanted)))


if __name__ == "__main__":
    main()
