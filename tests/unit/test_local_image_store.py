"""The local image store's writes: atomic, private, and still right when a folder it
made earlier has been removed (it remembers the folders it made, to skip mkdir)."""

from __future__ import annotations

import shutil
import stat
from pathlib import Path

import pytest

from domain.errors import PermanentError
from workers.providers.storage import LocalImageStore


def test_a_put_writes_the_bytes_privately_and_leaves_no_temp_file(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, "http://media.test/")
    url = store.put("u1/e1.png", b"picture", "image/png")
    assert url == "http://media.test/u1/e1.png"
    assert store.get("u1/e1.png") == b"picture"
    assert stat.S_IMODE((tmp_path / "u1" / "e1.png").stat().st_mode) == 0o600
    assert [p.name for p in (tmp_path / "u1").iterdir()] == ["e1.png"]


def test_a_put_overwrites_and_survives_its_folder_being_removed(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path, "http://media.test")
    store.put("u1/e1.png", b"first", "image/png")
    store.put("u1/e1.png", b"second", "image/png")
    assert store.get("u1/e1.png") == b"second"
    shutil.rmtree(tmp_path / "u1")  # say, the person's pictures were deleted
    store.put("u1/e2.png", b"third", "image/png")
    assert store.keys("u1") == ["u1/e2.png"]


def test_an_unsafe_key_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    store = LocalImageStore(tmp_path / "media", "http://media.test")
    with pytest.raises(PermanentError, match="unsafe media key"):
        store.put("../escape.png", b"x", "image/png")
    assert not (tmp_path / "escape.png").exists()
