"""The console's pages (GET): overview (and its live fragment and JSON), failures,
dead letters, one job (and its picture), analytics."""

from __future__ import annotations

import uuid

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from domain.messages import EntryCreated
from workers.console import data
from workers.console.security import operator_of
from workers.console.web import render
from workers.operations.audit import audited
from workers.settings import Settings

LIVE_REFRESH_MS = 3000


def _settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def read_recorded(request: Request, target: str) -> None:
    """A read of a person's entry text, in the operators' trail (issue 24.4)."""
    await run_in_threadpool(
        audited, "read_entry", operator=operator_of(request).name, source="console", target=target
    )


def _not_found(request: Request, what: str) -> Response:
    return render(request, "error.html", {"status": 404, "message": f"{what} not found"}, 404)


async def overview(request: Request) -> Response:
    status = await run_in_threadpool(data.overview, _settings(request))
    return render(request, "overview.html", {"status": status, "every_ms": LIVE_REFRESH_MS})


async def overview_live(request: Request) -> Response:
    status = await run_in_threadpool(data.overview, _settings(request))
    return render(request, "_live.html", {"status": status})


async def overview_api(request: Request) -> Response:
    return JSONResponse(await run_in_threadpool(data.overview_json, _settings(request)))


async def failures(request: Request) -> Response:
    cls = request.query_params.get("class") or None
    page = request.query_params.get("page", "1")
    number = int(page) if page.isdigit() and 0 < int(page) < 100_000 else 1
    view = await run_in_threadpool(data.failures, cls, number)
    shown = [str(item["row"].entry_id) for item in view["rows"]]
    if shown:  # each row shows an excerpt of the person's situation: one trail row
        await run_in_threadpool(
            lambda: audited(
                "read_entry",
                operator=operator_of(request).name,
                source="console",
                target="failures page",
                count=len(shown),
                detail={"entries": shown},
            )
        )
    return render(request, "failures.html", view)


async def dead_letters(request: Request) -> Response:
    queue = request.query_params.get("queue", EntryCreated.queue_name)
    if not data.known_queue(queue):
        return _not_found(request, f"queue {queue!r}")
    view = await run_in_threadpool(data.dead_letters, _settings(request), queue)
    return render(request, "dead_letters.html", view)


async def dead_letter(request: Request) -> Response:
    queue, ident = request.path_params["queue"], request.path_params["ident"]
    if not data.known_queue(queue):
        return _not_found(request, f"queue {queue!r}")
    view = await run_in_threadpool(data.dead_letter, _settings(request), queue, ident)
    if view is None:
        return _not_found(request, "dead letter")
    return render(request, "dead_letter.html", view)


async def find_job(request: Request) -> Response:
    text = (request.query_params.get("id") or "").strip()
    try:
        ident = uuid.UUID(text)
    except ValueError:
        return render(
            request, "error.html", {"status": 404, "message": "not an entry or session id"}, 404
        )
    kind = await run_in_threadpool(data.find_job, ident)
    if kind is None:
        return _not_found(request, "entry or intake session")
    return RedirectResponse(f"/jobs/{kind}/{ident}", status_code=303)


async def entry_job(request: Request) -> Response:
    entry_id: uuid.UUID = request.path_params["entry_id"]
    view = await run_in_threadpool(data.entry_job, _settings(request), entry_id)
    if view is None:
        return _not_found(request, "entry")
    await read_recorded(request, f"entry:{entry_id}")  # the page shows the person's text
    return render(request, "job_entry.html", view)


async def entry_image(request: Request) -> Response:
    entry_id: uuid.UUID = request.path_params["entry_id"]
    size = request.path_params["size"]
    if size not in ("thumbnail", "full"):
        return _not_found(request, "picture")
    found = await run_in_threadpool(data.image_file, entry_id, size)
    if found is None:
        return _not_found(request, "picture")
    content, media_type = found
    return Response(content, media_type=media_type)


async def session_job(request: Request) -> Response:
    session_id: uuid.UUID = request.path_params["session_id"]
    view = await run_in_threadpool(data.session_job, _settings(request), session_id)
    if view is None:
        return _not_found(request, "intake session")
    await read_recorded(request, f"intake_session:{session_id}")  # their words too
    return render(request, "job_session.html", view)


async def analytics(request: Request) -> Response:
    view = await run_in_threadpool(data.analytics, _settings(request))
    return render(request, "analytics.html", view)


def routes() -> list[BaseRoute]:
    return [
        Route("/", overview),
        Route("/overview/live", overview_live),
        Route("/api/overview", overview_api),
        Route("/failures", failures),
        Route("/dead-letters", dead_letters),
        Route("/dead-letters/{queue}/{ident}", dead_letter),
        Route("/job", find_job),
        Route("/jobs/entry/{entry_id:uuid}", entry_job),
        Route("/jobs/entry/{entry_id:uuid}/image/{size}", entry_image),
        Route("/jobs/session/{session_id:uuid}", session_job),
        Route("/analytics", analytics),
    ]
