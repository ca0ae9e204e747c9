"""A static HTML gallery of the visualizations, with a per-user weekly analytics chart.

Self-contained: images and thumbnails are copied next to index.html, so the folder can
be opened from disk or served as is. Every piece of user text is HTML-escaped.
"""

from __future__ import annotations

import shutil
from collections import defaultdict
from dataclasses import dataclass
from datetime import date
from html import escape
from pathlib import Path

from db.repositories import AnalyticsRow, GalleryEntry, IntakeSessionRow, VisualizationRow
from db.uow import UnitOfWork
from domain.providers import ImageStore
from domain.visual_language import LOOKS
from domain.vocabulary import EMOTIONS
from workers.providers.storage import picture


@dataclass(frozen=True)
class Card:
    user: str
    created: str
    situation: str
    emotions: list[str]
    intensity: str
    style: str
    status: str
    summary: str | None
    insights: list[str]
    error: str | None
    image: str | None
    thumb: str | None


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;background:#f4f2ee;color:#222}
header{padding:24px 32px;background:#1f1d2b;color:#fff}header p{color:#bbb;margin:4px 0 0}
main{padding:24px 32px}h2{margin-top:36px}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:18px}
.card{background:#fff;border-radius:10px;overflow:hidden;box-shadow:0 1px 4px #0002}
.card img{width:100%;display:block;aspect-ratio:1/1;object-fit:cover;background:#ddd}
.card .body{padding:12px 14px}.chip{display:inline-block;padding:2px 8px;border-radius:10px;
font-size:12px;margin:0 4px 4px 0;color:#fff}.meta{font-size:12px;color:#777}
.summary{font-size:14px;margin:8px 0}.card ul{padding-left:18px;font-size:13px;color:#444}
.failed{border:2px solid #d7263d}.error{color:#a0102a;font-size:13px}
.chart{background:#fff;border-radius:10px;padding:12px;box-shadow:0 1px 4px #0002;margin:12px 0}
.chart svg{max-width:720px;display:block}
.legend span{display:inline-block;margin-right:12px;font-size:12px}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
.talk{display:grid;grid-template-columns:260px 1fr;gap:18px;background:#fff;border-radius:10px;
padding:14px;box-shadow:0 1px 4px #0002;margin:12px 0}.talk img{width:100%;border-radius:6px}
.q{color:#1f1d2b;font-weight:600;margin:10px 0 2px}.a{margin:0 0 0 14px;color:#444}
"""


def _colour(emotion: str) -> str:
    return LOOKS[emotion].palette[1]


def _chart(rows: list[AnalyticsRow]) -> str:
    """Stacked weekly emotion counts as bars, average intensity as a line (inline SVG)."""
    weeks = sorted(
        (r for r in rows if (r.period_end - r.period_start).days == 6), key=lambda r: r.period_start
    )
    if not weeks:
        return "<p class='meta'>No weekly analytics yet.</p>"
    width, height, pad = 640, 220, 30
    slot = (width - 2 * pad) / len(weeks)
    top = max(sum(r.emotion_counts.values()) for r in weeks) or 1
    parts = [f"<svg viewBox='0 0 {width} {height + 40}' width='100%' role='img'>"]
    points = []
    for i, row in enumerate(weeks):
        x = pad + i * slot + slot * 0.15
        y = float(height)
        for emotion in EMOTIONS:
            n = row.emotion_counts.get(emotion, 0)
            if not n:
                continue
            h = (height - pad) * n / top
            y -= h
            parts.append(
                f"<rect x='{x:.1f}' y='{y:.1f}' width='{slot * 0.7:.1f}' "
                f"height='{h:.1f}' fill='{_colour(emotion)}'><title>{emotion}: {n}"
                "</title></rect>"
            )
        parts.append(
            f"<text x='{x + slot * 0.35:.1f}' y='{height + 14}' font-size='10' "
            f"text-anchor='middle'>{row.period_start:%d %b}</text>"
        )
        if row.average_intensity is not None:
            iy = height - (height - pad) * float(row.average_intensity)
            points.append(f"{x + slot * 0.35:.1f},{iy:.1f}")
    if points:
        parts.append(
            f"<polyline points='{' '.join(points)}' fill='none' stroke='#222' "
            "stroke-width='2' stroke-dasharray='4 3'/>"
        )
    parts.append(
        f"<text x='{pad}' y='{height + 32}' font-size='11'>bars: entries per emotion "
        "and ISO week (UTC) &#183; dashed line: average intensity (0-1)</text></svg>"
    )
    legend = "".join(f"<span><i style='background:{_colour(e)}'></i>{e}</span>" for e in EMOTIONS)
    return "<div class='chart'>" + "".join(parts) + f"<div class='legend'>{legend}</div></div>"


def _card_html(card: Card) -> str:
    chips = "".join(
        f"<span class='chip' style='background:{_colour(e)}'>{escape(e)}</span>"
        for e in card.emotions
    )
    image = (
        f"<a href='{escape(card.image)}'><img src='{escape(card.thumb or card.image)}' "
        f"alt='{escape(card.style)} picture of the entry' loading='lazy'></a>"
        if card.image
        else "<img alt='no image'>"
    )
    insights = "".join(f"<li>{escape(i)}</li>" for i in card.insights)
    error = f"<p class='error'>{escape(card.error)}</p>" if card.error else ""
    return (
        f"<div class='card {'failed' if card.status == 'failed' else ''}'>{image}"
        f"<div class='body'>{chips}<div class='meta'>{escape(card.created)} &#183; "
        f"intensity {escape(card.intensity)} &#183; {escape(card.style)} &#183; "
        f"{escape(card.status)}</div><p><b>{escape(card.situation)}</b></p>"
        f"<p class='summary'>{escape(card.summary or '')}</p><ul>{insights}</ul>{error}"
        "</div></div>"
    )


def _talk_html(session: IntakeSessionRow, image: str | None, status: str) -> str:
    """One intake conversation: the questions and answers, the summary, the picture."""
    turns = "".join(
        f"<p class='q'>{escape(str(e.get('step')))}. {escape(str(e.get('question', '')))}</p>"
        f"<p class='a'>{escape(str(e.get('answer') or '(no answer yet)'))}</p>"
        for e in session.conversation_history
        if isinstance(e, dict)
    )
    picture = f"<img src='{escape(image)}' alt='the resulting picture'>" if image else ""
    state = "complete" if session.is_complete else f"waiting at step {session.current_step}"
    return (
        f"<div class='talk'><div>{picture}<div class='meta'>{escape(state)} &#183; "
        f"visualization {escape(status)}</div></div><div><p><b>"
        f"{escape(session.initial_situation)}</b></p>{turns}"
        f"<p class='summary'><i>{escape(session.final_summary or '')}</i></p></div></div>"
    )


def write_gallery(
    uow: UnitOfWork,
    store: ImageStore,
    folder: Path,
    *,
    extra_sections: str = "",
    title: str = "EmotionVisualizer gallery",
) -> Path:
    media = folder / "media"
    if media.exists():
        shutil.rmtree(media)
    media.mkdir(parents=True)
    with uow:
        entries = uow.showcase.gallery_entries()
        conversations = uow.showcase.conversations()
        analytics_rows = uow.showcase.analytics_by_email()
    cards: dict[str, list[Card]] = defaultdict(list)
    for entry in entries:
        cards[entry.email].append(_card(entry, store, media))
    talks = []
    for session, viz in conversations:
        image = None
        if viz is not None and viz.image_url:
            image = _copy(store, viz.thumbnail_url or viz.image_url, media)
        talks.append(_talk_html(session, image, viz.status if viz else "not created"))
    if talks:
        extra_sections += "<h2>Intake conversations</h2>" + "".join(talks)
    analytics: dict[str, list[AnalyticsRow]] = defaultdict(list)
    for email, row in analytics_rows:
        analytics[email].append(row)
    sections = [
        f"<h2>{escape(email)}</h2>{_chart(analytics[email])}"
        f"<div class='grid'>{''.join(_card_html(c) for c in user_cards)}</div>"
        for email, user_cards in cards.items()
    ]
    html = (
        f"<!doctype html><html lang='en'><meta charset='utf-8'><title>{escape(title)}</title>"
        f"<style>{CSS}</style><header><h1>{escape(title)}</h1><p>generated "
        f"{date.today():%Y-%m-%d}</p></header><main>{extra_sections}{''.join(sections)}"
        "</main></html>"
    )
    index = folder / "index.html"
    index.write_text(html, encoding="utf-8")
    return index


def _card(entry: GalleryEntry, store: ImageStore, media: Path) -> Card:
    viz: VisualizationRow | None = entry.visualization
    image = thumb = None
    if viz is not None and viz.image_url:
        image = _copy(store, viz.image_url, media)
        thumb = _copy(store, viz.thumbnail_url, media) if viz.thumbnail_url else None
    return Card(
        user=entry.email,
        created=f"{entry.created_at:%Y-%m-%d %H:%M} UTC",
        situation=entry.situation,
        emotions=list(entry.emotions),
        intensity=str(entry.intensity),
        style=viz.style if viz else "-",
        status=viz.status if viz else "not queued",
        summary=viz.summary if viz else None,
        insights=list(viz.insights) if viz else [],
        error=viz.error_message if viz and viz.status == "failed" else None,
        image=image,
        thumb=thumb,
    )


def _copy(store: ImageStore, url: str, media: Path) -> str | None:
    """The picture copied next to the page, read through the store (a folder or S3)."""
    found = picture(store, url)
    key = store.key_for_url(url)
    if found is None or key is None:  # an image from another store is simply not shown
        return None
    name = key.rsplit("/", 1)[-1]
    (media / name).write_bytes(found[0])
    return f"media/{name}"
