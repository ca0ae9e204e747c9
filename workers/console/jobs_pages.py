"""The console's jobs page (issue 24.1-24.2): find jobs with the CLI's filters
(``emotionviz jobs list``), a page at a time, and replay the failed ones matching them
after a confirmation page that states the count and the paid model calls
(``emotionviz replay --class ... --dry-run``, then the batches). The same use cases
as the CLI (workers/operations/job_search.py); the POST goes through the Guard (origin,
CSRF) like every action."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from db.repositories.job_search import JobFilter
from workers.console.security import form_of
from workers.console.web import flash, render
from workers.logging import get_logger
from workers.operations import job_search

log = get_logger("emotionviz.console")

FIELDS = ("user", "status", "since", "older_than")


def _filters(values: dict[str, list[str]]) -> dict[str, Any]:
    """The filters as typed (query string or form): blanks are no filter."""
    chosen: dict[str, Any] = {
        name: (values.get(name) or [""])[0].strip() or None for name in FIELDS
    }
    chosen["classes"] = [c for c in values.get("class", []) if c]
    return chosen


def _query(chosen: dict[str, Any], **extra: str) -> str:
    pairs = [(name, chosen[name]) for name in FIELDS if chosen.get(name)]
    pairs += [("class", c) for c in chosen["classes"]]
    pairs += list(extra.items())
    return urlencode(pairs)


def _build(chosen: dict[str, Any]) -> JobFilter:
    return job_search.build_filter(
        user=chosen["user"],
        status=chosen["status"],
        classes=chosen["classes"],
        since=chosen["since"],
        older_than=chosen["older_than"],
    )


def _operator(request: Request) -> str:
    """Who acts: the signed-in operator's name when the console's sign-in gives one
    (named operator tokens, issue 24.4), else "console"."""
    signed_in = request.scope.get("console.operator")  # the Guard's, when it names one
    name = getattr(signed_in, "name", None)
    return str(name) if name else "console"


def _view(request: Request, chosen: dict[str, Any], **more: Any) -> dict[str, Any]:
    return {
        "chosen": chosen,
        "classes": job_search.FAILURE_CLASSES,
        "statuses": job_search.STATUSES,
        "query": _query(chosen),
        **more,
    }


def _limit(text: str) -> int:
    """The page size typed in the address: blank is the default; anything else that is
    not a whole number in range is a 400 with the line, like a bad filter."""
    if not text:
        return job_search.DEFAULT_LIMIT
    whole = text.isascii() and text.isdigit() and len(text) <= 9  # int() of 5000 digits fails
    if not (whole and 1 <= int(text) <= job_search.MAX_LIMIT):
        raise job_search.FilterError(
            f"limit: a whole number from 1 to {job_search.MAX_LIMIT}, not {text[:20]!r}"
        )
    return int(text)


async def jobs(request: Request) -> Response:
    values = {key: request.query_params.getlist(key) for key in request.query_params}
    chosen = _filters(values)
    after = request.query_params.get("after") or None
    try:
        limit = _limit(request.query_params.get("limit", "").strip())
        flt = _build(chosen)
        page = await run_in_threadpool(job_search.find_jobs, flt, limit, after)
    except job_search.FilterError as exc:
        return render(request, "jobs.html", _view(request, chosen, error=str(exc), page=None), 400)
    next_url = f"/jobs?{_query(chosen, after=page.next)}" if page.next else None
    replayable = flt.status in (None, job_search.FAILED)
    return render(
        request,
        "jobs.html",
        _view(request, chosen, error=None, page=page, next_url=next_url, replayable=replayable),
    )


async def replay_confirm(request: Request) -> Response:
    """GET: what a replay of the failed jobs matching the filters would do and cost."""
    values = {key: request.query_params.getlist(key) for key in request.query_params}
    chosen = _filters(values) | {"status": None}  # a replay takes failed jobs only
    try:
        plan = await run_in_threadpool(job_search.plan_replay, _build(chosen))
    except job_search.FilterError as exc:
        return render(request, "jobs.html", _view(request, chosen, error=str(exc), page=None), 400)
    return render(request, "jobs_replay.html", _view(request, chosen, plan=plan, changed=None))


async def replay(request: Request) -> Response:
    """POST (from the confirmation): replay in batches. If more rows match now than the
    operator confirmed, confirm again with the new count rather than act on them."""
    form = form_of(request)
    chosen = _filters(form) | {"status": None}
    confirmed = (form.get("confirmed_rows") or [""])[0]
    try:
        flt = _build(chosen)
    except job_search.FilterError as exc:
        return render(request, "jobs.html", _view(request, chosen, error=str(exc), page=None), 400)
    plan = await run_in_threadpool(job_search.plan_replay, flt)
    if not confirmed.isdigit() or plan.rows > int(confirmed):
        view = _view(request, chosen, plan=plan, changed=confirmed if confirmed.isdigit() else None)
        return render(request, "jobs_replay.html", view, 409)
    operator = _operator(request)
    result = await run_in_threadpool(
        lambda: job_search.replay_matching(flt, source="console", operator=operator)
    )
    log.info(
        "console replayed failed visualizations",
        rows=result.rows,
        batches=result.batches,
        filters=job_search.describe(flt),
        operator=operator,
    )
    flash(
        request,
        f"replayed {result.rows} failed visualizations in {result.batches} batches "
        f"(about {result.paid_calls} paid model calls)",
    )
    return RedirectResponse(f"/jobs?{_query(chosen)}", status_code=303)


def routes() -> list[BaseRoute]:
    return [
        Route("/jobs", jobs, methods=["GET"]),
        Route("/jobs/replay", replay_confirm, methods=["GET"]),
        Route("/jobs/replay", replay, methods=["POST"]),
    ]
