"""Offline intake provider: deterministic, adaptive questions from the emotions the
person's words suggest so far, and a deterministic completion rule:

complete when the step limit is reached, or when at least three answers are in, at
least one emotion is recognised and an intensity was given (a number from 0 to 10).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

from domain.intake import AskNext, Complete, IntakeState
from domain.ledger import Attempt
from domain.vocabulary import EMOTIONS
from workers.providers.paid_calls import estimated_tokens, report

LEXICON: dict[str, tuple[str, ...]] = {
    "joy": ("happy", "glad", "joy", "delighted", "great", "wonderful", "proud"),
    "sadness": ("sad", "down", "cry", "cried", "lonely", "miss", "grief", "hurt"),
    "anger": ("angry", "anger", "furious", "mad", "rage", "livid"),
    "fear": ("afraid", "scared", "fear", "terrified", "frightened", "unsafe"),
    "disgust": ("disgust", "gross", "revolting", "sick of", "repulsed"),
    "surprise": ("surprise", "surprised", "unexpected", "shocked", "suddenly"),
    "anxiety": ("anxious", "anxiety", "nervous", "worried", "worry", "panic", "stress"),
    "contentment": ("calm", "content", "peaceful", "relaxed", "relieved", "at ease"),
    "frustration": ("frustrated", "frustration", "stuck", "annoyed", "fed up", "again"),
    "excitement": ("excited", "excitement", "thrilled", "can't wait", "eager"),
}
_NUMBER = re.compile(r"\b(10|[0-9])\b")


def recognised_emotions(texts: list[str]) -> list[str]:
    """Vocabulary emotions the texts suggest, most mentioned first, ties by name."""
    joined = " ".join(texts).lower()
    scores = {e: sum(joined.count(word) for word in LEXICON[e]) for e in EMOTIONS}
    found = [e for e in EMOTIONS if scores[e] > 0]
    return sorted(found, key=lambda e: (-scores[e], e))[:3]


def stated_intensity(answers: list[str]) -> Decimal | None:
    for answer in answers:
        match = _NUMBER.search(answer)
        if match:
            return (Decimal(match.group(1)) / 10).quantize(Decimal("0.01"))
    return None


class LocalIntakeProvider:
    name = "local"

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        turn, context = self._next_turn(state)
        said = " ".join([state.initial_situation, *(e.answer or "" for e in state.history)])
        report(
            Attempt(
                "local",
                input_tokens=estimated_tokens(said),
                output_tokens=estimated_tokens(
                    turn.question if isinstance(turn, AskNext) else turn.summary
                ),
            )
        )
        return turn, context

    def _next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        answers = [e.answer for e in state.history if e.answer]
        emotions = recognised_emotions([state.initial_situation, *answers])
        intensity = stated_intensity(answers)
        context = {
            "provider": self.name,
            "model": "local-rules-v1",
            "emotions_so_far": emotions,
            "intensity": str(intensity) if intensity is not None else None,
        }
        enough = len(answers) >= 3 and emotions and intensity is not None
        if state.must_complete or enough:
            chosen = emotions or ["contentment"]
            if not emotions:
                context["note"] = "no emotion recognised in the answers; defaulted"
            summary = f"{state.initial_situation.strip()} " + " ".join(
                f"({e.step}) {e.answer}" for e in state.history if e.answer
            )
            return Complete(
                summary=summary[:4000],
                emotions=chosen,
                intensity=intensity if intensity is not None else Decimal("0.50"),
            ), context
        return AskNext(
            question=self._question(state.step, emotions, intensity), ai_context=context
        ), context

    @staticmethod
    def _question(step: int, emotions: list[str], intensity: Decimal | None) -> str:
        if not emotions:
            return "Which of these fits how you felt best: " + ", ".join(EMOTIONS) + "?"
        main = emotions[0]
        if intensity is None:
            return (
                f"You mentioned something like {main}. How strong was it, from 0 to 10, "
                "and where did you notice it in your body?"
            )
        by_step = {
            2: f"What happened just before the {main} showed up?",
            3: f"What went through your mind when you felt {main}?",
            4: "What did you do next, and did it help?",
        }
        return by_step.get(step, "Is there anything else about this moment you want to remember?")
