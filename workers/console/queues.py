"""The console's queues page (issue 24.3): which queues are paused, since when, by
whom, and (write scope; the Guard refuses a read token) buttons to pause and resume.
The same use cases as ``emotionviz queue`` (workers/operations/pauses.py), recorded in
the operators' trail under the signed-in operator's name."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from domain.errors import ConflictError
from domain.messages import QUEUES
from workers.console.security import first, form_of, operator_of
from workers.console.web import flash, render
from workers.logging import get_logger
from workers.operations.pauses import pause_queue, paused_queues, resume_queue
from workers.operations.readable import age

log = get_logger("emotionviz.console")


async def queues_page(request: Request) -> Response:
    pauses = {pause.queue: pause for pause in await run_in_threadpool(paused_queues)}
    rows = [
        {
            "name": name,
            "pause": pauses.get(name),
            "paused_for": age(pauses[name].paused_s) if name in pauses else None,
        }
        for name in QUEUES
    ]
    return render(
        request,
        "queues.html",
        {"queues": rows, "may_write": operator_of(request).may_write},
    )


def _unknown(request: Request, queue: str) -> Response | None:
    if queue in QUEUES:
        return None
    return render(request, "error.html", {"status": 404, "message": "no such queue"}, 404)


async def pause(request: Request) -> Response:
    queue = request.path_params["queue"]
    if (missing := _unknown(request, queue)) is not None:
        return missing
    reason = (first(form_of(request), "reason") or "").strip()[:500] or None
    who = operator_of(request).name
    try:
        await run_in_threadpool(
            lambda: pause_queue(queue, reason=reason, operator=who, source="console")
        )
    except ConflictError as exc:
        flash(request, str(exc))
    else:
        log.info("console paused a queue", queue=queue, operator=who)
        flash(request, f"queue {queue} paused: workers take none of its messages")
    return RedirectResponse("/queues", status_code=303)


async def resume(request: Request) -> Response:
    queue = request.path_params["queue"]
    if (missing := _unknown(request, queue)) is not None:
        return missing
    who = operator_of(request).name
    try:
        await run_in_threadpool(lambda: resume_queue(queue, operator=who, source="console"))
    except ConflictError as exc:
        flash(request, str(exc))
    else:
        log.info("console resumed a queue", queue=queue, operator=who)
        flash(request, f"queue {queue} resumed")
    return RedirectResponse("/queues", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/queues", queues_page, methods=["GET"]),
        Route("/queues/{queue}/pause", pause, methods=["POST"]),
        Route("/queues/{queue}/resume", resume, methods=["POST"]),
    ]
