"""ImageStore on an S3 bucket (AWS S3 or any S3-compatible server), through obstore.

Every machine of a fleet sees the same pictures: a worker on one machine writes them, a
console on another reads them, media GC anywhere deletes them.

- Writes are one PUT each (never multipart): S3 makes a PUT atomic, so a reader sees
  the old object or the new one, never half; the key comes from the row id, so a retried
  job overwrites its own object instead of leaving a second one.
- What the row keeps: ``MEDIA_BASE_URL/key`` with MEDIA_ACCESS=public (the bucket or a
  CDN serves it as is), else ``s3://bucket/prefix/key`` (the object's address, which
  never expires); ``reader_url`` turns that into a presigned GET valid
  MEDIA_PRESIGN_TTL_S. Either form is recognised whatever the mode, so switching modes
  leaves old rows readable and their objects safe from the orphan scan.
- Errors become ours: a missing object is FileNotFoundError (as on a disk); anything
  else is MediaStoreError, transient (a job retries it: the store being down or the
  credentials being wrong is not the entry's fault). Messages name the key and the
  status, never a credential (obstore puts none in them: signatures go in headers).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import TYPE_CHECKING, NoReturn

import obstore
from obstore.exceptions import PermissionDeniedError, UnauthenticatedError
from obstore.store import S3Store

from domain.errors import PermanentError, TransientError
from workers.providers.store_keys import SAFE_KEY
from workers.settings import Settings

if TYPE_CHECKING:
    from obstore.store import ClientConfig, RetryConfig, S3Config

DEFAULT_REGION = "us-east-1"
# Readiness and health ask once, quickly: a store that does not answer within this is
# reported, not waited for.
CHECK_TIMEOUT_S = 3.0


class MediaStoreError(TransientError):
    """The object store refused or did not answer; retrying later may help."""


def _reason(exc: BaseException) -> str:
    """obstore's first line, without its debug dump (which repeats it at length)."""
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return first[:300]


def _raise(operation: str, key: str, exc: BaseException) -> NoReturn:
    if isinstance(exc, PermissionDeniedError | UnauthenticatedError):
        raise MediaStoreError(
            f"the object store refused to {operation} {key}: check AWS_ACCESS_KEY_ID, "
            f"AWS_SECRET_ACCESS_KEY and the bucket's policy ({_reason(exc)})"
        ) from None
    raise MediaStoreError(
        f"could not {operation} {key} in the object store: {_reason(exc)}"
    ) from None


def _public_base(settings: Settings, bucket: str, prefix: str) -> str:
    """MEDIA_BASE_URL when set, else the bucket's own URL at the endpoint (path style)."""
    if "media_base_url" in settings.model_fields_set:
        return settings.media_base_url
    endpoint = settings.aws_endpoint_url
    region = settings.aws_region or DEFAULT_REGION
    base = f"{endpoint}/{bucket}" if endpoint else f"https://{bucket}.s3.{region}.amazonaws.com"
    return f"{base}/{prefix}" if prefix else base


class S3ImageStore:
    def __init__(
        self,
        client: S3Store,
        *,
        bucket: str,
        prefix: str,
        public_base_url: str | None,
        presign_ttl_s: int | None,
        where: str,
    ) -> None:
        """``presign_ttl_s`` set: private bucket, presigned reader URLs; else public at
        ``public_base_url``. ``client`` is thread-safe: one per process serves all its
        worker threads (its connection pool is shared; calls release the GIL)."""
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.public_base_url = public_base_url.rstrip("/") if public_base_url else None
        self.presign_ttl_s = presign_ttl_s
        self._where = where
        self._address = f"s3://{bucket}/{prefix}/" if prefix else f"s3://{bucket}/"

    @classmethod
    def from_settings(
        cls, settings: Settings, *, timeout_s: float | None = None, retries: int = 3
    ) -> S3ImageStore:
        media = settings.media
        assert media.kind == "s3", "MEDIA_URL is not s3://"
        timeout = timedelta(seconds=timeout_s or settings.media_timeout_s)
        config: S3Config = {
            "region": settings.aws_region or DEFAULT_REGION,
            # Path-style requests (endpoint/bucket/key): what S3-compatible servers take,
            # and AWS too.
            "virtual_hosted_style_request": False,
        }
        if settings.aws_endpoint_url:
            config["endpoint"] = settings.aws_endpoint_url
        if settings.aws_access_key_id and settings.aws_secret_access_key:
            config["access_key_id"] = settings.aws_access_key_id.get_secret_value()
            config["secret_access_key"] = settings.aws_secret_access_key.get_secret_value()
            if settings.aws_session_token:
                config["session_token"] = settings.aws_session_token.get_secret_value()
        endpoint = settings.aws_endpoint_url
        client_options: ClientConfig = {
            "timeout": timeout,
            "connect_timeout": timedelta(seconds=min(5.0, timeout.total_seconds())),
            "allow_http": endpoint is not None and endpoint.startswith("http://"),
        }
        retry: RetryConfig = {"max_retries": retries, "retry_timeout": timeout}
        client = S3Store(
            media.bucket,
            prefix=media.prefix or None,
            config=config,
            client_options=client_options,
            retry_config=retry,
        )
        public = settings.media_access == "public"
        where = settings.aws_endpoint_url or f"AWS {config['region']}"
        return cls(
            client,
            bucket=media.bucket,
            prefix=media.prefix,
            public_base_url=_public_base(settings, media.bucket, media.prefix),
            presign_ttl_s=None if public else settings.media_presign_ttl_s,
            where=where,
        )

    # --- the ImageStore protocol -------------------------------------------------------

    @staticmethod
    def _checked(key: str) -> str:
        if not SAFE_KEY.match(key):
            raise PermanentError(f"unsafe media key {key!r}")
        return key

    def put(self, key: str, data: bytes, content_type: str) -> str:
        self._checked(key)
        try:
            obstore.put(
                self.client,
                key,
                data,
                attributes={"Content-Type": content_type},
                use_multipart=False,  # one PUT: atomic, and no orphaned parts
            )
        except Exception as exc:  # noqa: BLE001 - every client error becomes ours
            _raise("write", key, exc)
        if self.presign_ttl_s is None and self.public_base_url:
            return f"{self.public_base_url}/{key}"
        return f"{self._address}{key}"

    def get(self, key: str) -> bytes:
        self._checked(key)
        try:
            return bytes(obstore.get(self.client, key).bytes())
        except FileNotFoundError:
            raise FileNotFoundError(key) from None
        except Exception as exc:  # noqa: BLE001
            _raise("read", key, exc)

    def delete(self, key: str) -> bool:
        """Remove one object; False when there was none (S3's DELETE does not say, so a
        HEAD asks first: GC reports what it removed)."""
        self._checked(key)
        try:
            obstore.head(self.client, key)
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001
            _raise("find", key, exc)
        try:
            obstore.delete(self.client, key)
        except FileNotFoundError:
            return False
        except Exception as exc:  # noqa: BLE001
            _raise("delete", key, exc)
        return True

    def stored(self, prefix: str) -> list[tuple[str, float]]:
        now = time.time()
        found = []
        try:
            for batch in obstore.list(self.client, prefix):
                for meta in batch:
                    key = meta["path"]
                    if SAFE_KEY.match(key) and key.startswith(prefix + "/"):
                        found.append((key, max(0.0, now - meta["last_modified"].timestamp())))
        except Exception as exc:  # noqa: BLE001
            _raise("list", f"{prefix}/", exc)
        return sorted(found)

    def keys(self, prefix: str) -> list[str]:
        return [key for key, _ in self.stored(prefix)]

    def key_for_url(self, url: str) -> str | None:
        for base in (self._address, f"{self.public_base_url}/" if self.public_base_url else None):
            if base and url.startswith(base):
                key = url[len(base) :]
                return key if SAFE_KEY.match(key) else None
        return None

    def reader_url(self, url: str) -> str | None:
        key = self.key_for_url(url)
        if key is None:
            return None
        if self.presign_ttl_s is None and self.public_base_url:
            return f"{self.public_base_url}/{key}"
        ttl = timedelta(seconds=self.presign_ttl_s or 3600)
        try:
            return obstore.sign(self.client, "GET", key, ttl)
        except Exception as exc:  # noqa: BLE001
            _raise("sign a URL for", key, exc)

    def describe(self) -> str:
        access = "public" if self.presign_ttl_s is None else f"presigned {self.presign_ttl_s} s"
        return f"{self._address} at {self._where} ({access})"

    # --- readiness -----------------------------------------------------------------------

    def check(self) -> str:
        """One LIST of the prefix's top level (a missing bucket or a refused credential
        fails it; a HEAD of a missing key would not tell a missing bucket). Raises
        MediaStoreError; returns what it saw."""
        try:
            obstore.list_with_delimiter(self.client)
        except Exception as exc:  # noqa: BLE001
            _raise("list", self._address, exc)
        return f"{self._address} answers"
