"""Offline providers, the default with no API key: a deterministic analysis from the
declared emotions, intensity and text, and a Pillow renderer (local_render.py).

Same input, same output: the seed is the entry id, so replays draw the same picture.
"""

from __future__ import annotations

import hashlib
import io
import re

from domain.analysis import (
    Analysis,
    AnalysisResult,
    EntrySnapshot,
    ImageResult,
    VisualElements,
)
from domain.ledger import Attempt
from domain.visual_language import LOOKS, intensity_word
from domain.vocabulary import VisualizationStyle
from workers.providers.local_render import render
from workers.providers.paid_calls import estimated_tokens, report

_WORD = re.compile(r"[A-Za-z][A-Za-z'-]{3,}")
_STOP = {
    "with",
    "that",
    "this",
    "have",
    "from",
    "about",
    "after",
    "before",
    "again",
    "into",
    "when",
    "what",
    "were",
    "there",
    "their",
    "would",
    "could",
    "been",
    "then",
    "than",
}


def _keywords(text: str, limit: int = 3) -> list[str]:
    seen: list[str] = []
    for word in _WORD.findall(text.lower()):
        if word not in _STOP and word not in seen:
            seen.append(word)
    return seen[:limit]


class LocalAnalysisProvider:
    name = "local"

    def analyse(self, entry: EntrySnapshot, style: VisualizationStyle) -> AnalysisResult:
        emotions = list(entry.emotions)
        main = LOOKS[emotions[0]]
        strength = intensity_word(float(entry.intensity))
        topic = ", ".join(_keywords(entry.situation)) or "this moment"
        readings = [LOOKS[e].reading for e in emotions]
        summary = f"A {strength} experience around {topic}: " + "; ".join(readings) + "."
        insights = [f"{strength.capitalize()} {emotions[0]} stood out ({entry.intensity})."]
        if len(emotions) > 1:
            insights.append(
                f"{emotions[0].capitalize()} and {emotions[1]} appeared together: "
                "mixed feelings are common when something matters to you."
            )
        if float(entry.intensity) >= 0.7:
            insights.append("A strong reaction like this can be worth revisiting once it settles.")
        else:
            insights.append("The feeling stayed manageable; notice what helped keep it there.")
        palette = list(dict.fromkeys(c for e in emotions for c in LOOKS[e].palette))[:6]
        motifs = list(dict.fromkeys(m for e in emotions for m in LOOKS[e].motifs))[:6]
        composition = (
            "dense, dynamic, high contrast"
            if float(entry.intensity) >= 0.6
            else "open, airy, soft gradients"
        )
        analysis = Analysis(
            summary=summary,
            insights=insights,
            visual_elements=VisualElements(
                palette=palette, motifs=motifs, composition=composition, metaphor=main.metaphor
            ),
            image_prompt=f"{main.metaphor}, {', '.join(motifs[:3])}, {composition}",
        )
        raw = {"provider": self.name, "model": "local-rules-v1", "emotions": emotions}
        report(
            Attempt(
                "local",
                input_tokens=estimated_tokens(entry.situation + (entry.notes or "")),
                output_tokens=estimated_tokens(summary + "".join(insights)),
            )
        )
        return AnalysisResult(analysis=analysis, raw_response=raw)


class LocalImageProvider:
    name = "local"

    def __init__(self, size_px: int = 768) -> None:
        self.size_px = size_px

    def draw(
        self, entry: EntrySnapshot, analysis: Analysis, style: VisualizationStyle
    ) -> ImageResult:
        seed = int(hashlib.sha256(entry.entry_id.encode()).hexdigest()[:12], 16)
        image = render(style, list(entry.emotions), float(entry.intensity), seed, self.size_px)
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=False, compress_level=3)
        raw = {
            "provider": self.name,
            "model": "local-pillow-v1",  # every dump names its provider and model
            "renderer": "pillow-v1",
            "style": style.value,
            "size": [self.size_px, self.size_px],
            "mime_type": "image/png",
        }
        report(Attempt("local", input_tokens=estimated_tokens(analysis.image_prompt), image=True))
        return ImageResult(data=out.getvalue(), mime_type="image/png", raw_response=raw)
