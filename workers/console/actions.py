"""The console's actions (POST, checked by the Guard, which also refuses a read-scope
operator): replay failed rows, retry and purge dead letters. Each is the use case the
CLI runs too (workers/operations/: jobs.replay_failed, dead_letters.retry_dead_letters;
DeadLetters.purge), logged and recorded in the operators' trail under the signed-in
operator's name (a replay in its own transaction; the dead letters, which live in
Redis, after, with ``audited``), then a redirect with a one-line flash message
(post/redirect/get)."""

from __future__ import annotations

import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from workers import bootstrap
from workers.console import data
from workers.console.security import first, form_of, local_path, operator_of
from workers.console.web import flash, render
from workers.logging import get_logger
from workers.messaging.dead_letters import DeadLetters
from workers.operations.audit import audited
from workers.operations.dead_letters import retry_dead_letters
from workers.operations.jobs import replay_failed
from workers.settings import Settings

log = get_logger("emotionviz.console")


def _chosen(request: Request, many: str) -> list[str]:
    """The ids an action applies to: the row's own button ('one') wins over the ticked
    boxes, so a row's button never also acts on what happens to be ticked."""
    form = form_of(request)
    one = first(form, "one")
    return [one] if one else [value for value in form.get(many, []) if value]


def _back(request: Request, default: str) -> Response:
    return RedirectResponse(local_path(first(form_of(request), "back"), default), status_code=303)


def _client(request: Request) -> str | None:
    return request.client.host if request.client else None


async def record(
    request: Request, action: str, *, target: str | None = None, count: int | None = None
) -> None:
    """The change, in the operators' trail under the signed-in operator's name."""
    await run_in_threadpool(
        audited,
        action,
        operator=operator_of(request).name,
        source="console",
        target=target,
        count=count,
    )


async def replay(request: Request) -> Response:
    try:
        entry_ids = [uuid.UUID(value) for value in _chosen(request, "entry_id")]
    except ValueError:
        flash(request, "not an entry id: nothing replayed")
        return _back(request, "/failures")
    if not entry_ids:
        flash(request, "select at least one failed row to replay")
        return _back(request, "/failures")
    who = operator_of(request).name
    # Recorded in the replay's own transaction (a publish failing after its commit
    # still leaves the trail row of the rows it set back to pending).
    replayed = await run_in_threadpool(
        lambda: replay_failed(entry_ids, source="console", operator=who)
    )
    log.info("console replayed failed visualizations", rows=len(replayed), client=_client(request))
    skipped = len(entry_ids) - len(replayed)
    note = f" ({skipped} no longer failed)" if skipped else ""
    flash(request, f"replayed {len(replayed)} failed visualizations{note}")
    return _back(request, "/failures")


async def retry(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    queue = request.path_params["queue"]
    if not data.known_queue(queue):
        return render(request, "error.html", {"status": 404, "message": "no such queue"}, 404)
    ids = _chosen(request, "id")
    if not ids:
        flash(request, "select at least one dead letter to retry")
    else:
        moved = await run_in_threadpool(retry_dead_letters, settings, queue, ids)
        await record(request, "dlq.retry", target=queue, count=len(moved))
        log.info(
            "console retried dead letters", queue=queue, moved=len(moved), client=_client(request)
        )
        flash(request, f"retried {len(moved)} dead-lettered messages on {queue}")
    return _back(request, f"/dead-letters?queue={queue}")


async def purge(request: Request) -> Response:
    settings: Settings = request.app.state.settings
    queue = request.path_params["queue"]
    if not data.known_queue(queue):
        return render(request, "error.html", {"status": 404, "message": "no such queue"}, 404)
    if first(form_of(request), "confirm") != "yes":
        flash(request, f"tick the box to confirm: purge deletes every dead letter on {queue}")
    else:
        dead = DeadLetters(bootstrap.redis_client(), settings.redis_namespace)
        removed = await run_in_threadpool(dead.purge, queue)
        await record(request, "dlq.purge", target=queue, count=removed)
        log.info(
            "console purged dead letters", queue=queue, removed=removed, client=_client(request)
        )
        flash(request, f"purged {removed} dead-lettered messages on {queue}")
    return RedirectResponse(f"/dead-letters?queue={queue}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/failures/replay", replay, methods=["POST"]),
        Route("/dead-letters/{queue}/retry", retry, methods=["POST"]),
        Route("/dead-letters/{queue}/purge", purge, methods=["POST"]),
    ]
