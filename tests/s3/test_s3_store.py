"""The S3 image store against a real S3 server (SeaweedFS): writes are atomic and
idempotent, readers get working URLs (presigned or public), deletes and media GC work
through the bucket, and failures are ours, transient, and carry no secret."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
import uuid

import pytest
from sqlalchemy import Engine, text

from domain.errors import PermanentError, TransientError
from domain.messages import EntryCreated
from tests.integration.helpers import picture_pipeline, visualized
from tests.s3.conftest import PUBLIC, s3_settings
from workers.devtools.seaweed import SeaweedS3
from workers.observability.readiness import check_media
from workers.providers.s3_store import MediaStoreError, S3ImageStore
from workers.providers.storage import image_store, picture
from workers.services.media import MediaLifecycle, image_key, thumbnail_key
from workers.services.visualize import Outcome, VisualizationService
from workers.settings import load_settings

pytestmark = pytest.mark.integration


def _store(server: SeaweedS3, prefix: str, **overrides: object) -> S3ImageStore:
    store = image_store(s3_settings(server, prefix, **overrides))
    assert isinstance(store, S3ImageStore)
    return store


def _fetch(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, b"", ""


def test_put_get_delete_and_a_retried_put_leaves_one_object(
    s3_server: SeaweedS3, prefix: str
) -> None:
    store = _store(s3_server, prefix)
    key = image_key(uuid.uuid4(), "png")
    first = store.put(key, b"first drawing", "image/png")
    again = store.put(key, b"second drawing", "image/png")  # the retried job
    assert first == again == f"s3://{s3_server.bucket}/{prefix}/{key}"
    assert store.keys("visualizations") == [key]  # one object, not two
    assert store.get(key) == b"second drawing"
    assert store.key_for_url(first) == key
    assert store.delete(key) is True
    assert store.delete(key) is False  # gone: said so, not an error
    with pytest.raises(FileNotFoundError):
        store.get(key)
    assert store.stored("visualizations") == []


def test_another_machine_with_the_same_settings_reads_what_one_wrote(
    s3_server: SeaweedS3, prefix: str
) -> None:
    writer, reader = _store(s3_server, prefix), _store(s3_server, prefix)
    url = writer.put(thumbnail_key(uuid.uuid4()), b"RIFF....WEBP", "image/webp")
    assert picture(reader, url) == (b"RIFF....WEBP", "image/webp")
    assert picture(reader, "http://elsewhere.test/visualizations/x.png") is None


def test_a_presigned_url_serves_the_picture_over_http_until_it_expires(
    s3_server: SeaweedS3, prefix: str
) -> None:
    store = _store(s3_server, prefix, media_presign_ttl_s=2)
    url = store.put(image_key(uuid.uuid4(), "png"), b"\x89PNG private", "image/png")
    plain = f"{s3_server.endpoint}/{s3_server.bucket}/{prefix}/{store.key_for_url(url)}"
    assert _fetch(plain)[0] == 403  # the bucket is private: no URL without a signature
    signed = store.reader_url(url)
    assert signed is not None and "X-Amz-Signature=" in signed
    assert _fetch(signed) == (200, b"\x89PNG private", "image/png")
    time.sleep(3.1)
    assert _fetch(signed)[0] == 403  # past MEDIA_PRESIGN_TTL_S


def test_public_mode_stores_urls_anyone_can_fetch(s3_server: SeaweedS3, prefix: str) -> None:
    store = _store(s3_server, prefix, bucket=PUBLIC, media_access="public")
    key = image_key(uuid.uuid4(), "jpg")
    url = store.put(key, b"\xff\xd8 a jpeg", "image/jpeg")
    assert url == f"{s3_server.endpoint}/{PUBLIC}/{prefix}/{key}"
    assert store.reader_url(url) == url
    assert _fetch(url) == (200, b"\xff\xd8 a jpeg", "image/jpeg")
    # Rows written in presigned mode stay readable after a switch to public, and back.
    presigned = _store(s3_server, prefix, bucket=PUBLIC)
    assert presigned.key_for_url(url) == key
    assert store.key_for_url(f"s3://{PUBLIC}/{prefix}/{key}") == key


def test_an_unsafe_key_is_refused_before_any_request(s3_server: SeaweedS3, prefix: str) -> None:
    store = _store(s3_server, prefix)
    with pytest.raises(PermanentError, match="unsafe media key"):
        store.put("../escape.png", b"x", "image/png")


def test_wrong_credentials_are_a_transient_error_naming_no_secret(
    s3_server: SeaweedS3, prefix: str
) -> None:
    secret = "wrong-" + uuid.uuid4().hex
    store = _store(s3_server, prefix, aws_secret_access_key=secret)
    with pytest.raises(MediaStoreError) as refused:
        store.put(image_key(uuid.uuid4(), "png"), b"x", "image/png")
    assert isinstance(refused.value, TransientError)  # the entry is not at fault: retried
    assert "refused" in str(refused.value) and secret not in str(refused.value)
    assert s3_server.secret_key not in str(refused.value)
    check = check_media(s3_settings(s3_server, prefix, aws_secret_access_key=secret), 3.0)
    assert check is not None and not check.ok and secret not in check.detail


def test_readiness_reports_the_store(s3_server: SeaweedS3, prefix: str) -> None:
    answers = check_media(s3_settings(s3_server, prefix), 3.0)
    assert answers is not None and answers.ok
    missing = check_media(s3_settings(s3_server, prefix, bucket="evt-no-such-bucket"), 3.0)
    assert missing is not None and not missing.ok and "evt-no-such-bucket" in missing.detail
    down = s3_settings(s3_server, prefix, aws_endpoint_url="http://127.0.0.1:9")
    started = time.monotonic()
    refused = check_media(down, 2.0)
    assert refused is not None and not refused.ok and time.monotonic() - started < 10
    assert check_media(load_settings(media_url="file:///tmp/pictures"), 3.0) is None


# --- the pictures' lifecycle through the bucket ------------------------------------------


def _lifecycle(engine: Engine, store: S3ImageStore) -> tuple[VisualizationService, MediaLifecycle]:
    return picture_pipeline(engine, store)


def test_a_redrawn_entry_still_has_one_picture_and_one_thumbnail(
    engine: Engine, s3_server: SeaweedS3, prefix: str
) -> None:
    store = _store(s3_server, prefix)
    service, _media = _lifecycle(engine, store)
    user_id, vid = visualized(engine, service)
    with engine.begin() as conn:  # an operator's replay: the job runs again
        conn.execute(
            text(
                "UPDATE visualizations SET status = 'pending', image_url = NULL, "
                "thumbnail_url = NULL WHERE id = :v"
            ),
            {"v": vid},
        )
        entry_id = conn.execute(
            text("SELECT entry_id FROM visualizations WHERE id = :v"), {"v": vid}
        ).scalar_one()
    assert service.process(EntryCreated(entry_id=entry_id, user_id=user_id)) is Outcome.COMPLETED
    assert store.keys("visualizations") == sorted([f"visualizations/{vid}.png", thumbnail_key(vid)])


def test_media_gc_deletes_the_objects_of_deleted_rows_and_orphans(
    engine: Engine, s3_server: SeaweedS3, prefix: str
) -> None:
    store = _store(s3_server, prefix)
    service, media = _lifecycle(engine, store)
    leaving, leaving_viz = visualized(engine, service)
    _staying, staying_viz = visualized(engine, service)
    assert len(store.keys("visualizations")) == 4
    with engine.begin() as conn:  # the API deletes the account; FKs cascade
        conn.execute(text("DELETE FROM users WHERE id = :u"), {"u": leaving})
    # GC from "another machine": a store of its own, the same settings.
    elsewhere = MediaLifecycle(media.uow_factory, _store(s3_server, prefix))
    assert elsewhere.collect_garbage() == (1, 2)
    assert store.keys("visualizations") == sorted(
        [f"visualizations/{staying_viz}.png", thumbnail_key(staying_viz)]
    )
    assert str(leaving_viz) not in " ".join(store.keys("visualizations"))
    assert elsewhere.collect_garbage() == (0, 0)

    stray = image_key(uuid.uuid4(), "png")
    store.put(stray, b"a picture nobody references", "image/png")
    assert media.find_orphans() == []  # younger than an hour: maybe a job mid-way
    assert media.gc(apply=False, min_age_s=0).orphans == [stray]
    applied = media.gc(apply=True, min_age_s=0)
    assert applied.files_deleted == 1 and stray not in store.keys("visualizations")
    assert len(store.keys("visualizations")) == 2


def test_orphan_scan_keeps_the_files_of_rows_whose_url_it_does_not_recognise(
    engine: Engine, s3_server: SeaweedS3, prefix: str
) -> None:
    store = _store(s3_server, prefix)
    service, media = _lifecycle(engine, store)
    _user, vid = visualized(engine, service)
    with engine.begin() as conn:  # say, the bucket was renamed behind the rows
        conn.execute(
            text(
                "UPDATE visualizations SET image_url = replace(image_url, 's3://', 's3://old-') "
                "WHERE id = :v"
            ),
            {"v": vid},
        )
    assert media.gc(apply=True, min_age_s=0).files_deleted == 0
    assert len(store.keys("visualizations")) == 2


def test_removing_an_earlier_picture_never_fails_the_job(
    engine: Engine, s3_server: SeaweedS3, prefix: str
) -> None:
    """The clean-up after a paid picture: a store that refuses it (here: wrong
    credentials) leaves the file to `media gc` instead of failing (and retrying, paying
    again for) the job; a store that works removes the other format."""
    vid = uuid.uuid4()
    store = _store(s3_server, prefix)
    store.put(image_key(vid, "jpg"), b"earlier", "image/jpeg")
    refusing = _store(s3_server, prefix, aws_secret_access_key="wrong-" + uuid.uuid4().hex)
    _lifecycle(engine, refusing)[1].replaced(vid, "png")  # logged, not raised
    assert store.keys("visualizations") == [image_key(vid, "jpg")]
    _lifecycle(engine, store)[1].replaced(vid, "png")
    assert store.keys("visualizations") == []
