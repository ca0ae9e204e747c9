"""Gemini intake provider: the conversation so far as a multi-turn ``contents``, the
next turn as structured output (``{action: ask, question, ai_context}`` or
``{action: complete, summary, emotions, intensity}``), one repair attempt, then a
permanent InvalidModelOutputError (the service keeps its reason in ai_context)."""

from __future__ import annotations

import json
from typing import Any

from google.genai import types

from domain.intake import (
    INTAKE_SYSTEM_INSTRUCTION,
    AskNext,
    Complete,
    IntakeState,
    fence,
    intake_json_schema,
    parse_turn_text,
    turn_instruction,
)
from workers.providers.gemini import (
    GeminiClient,
    checked_text,
    generate_with_repair,
    structured_config,
    text_turn,
)
from workers.providers.ratelimit import RateGate


def conversation_contents(state: IntakeState) -> list[types.Content]:
    """user: the situation; then, per exchange, model: its question, user: the answer;
    the instruction for this turn rides on the last user turn (turns must alternate)."""
    user_texts = [f"The person described this situation:\n{fence(state.initial_situation)}"]
    model_texts: list[str] = []
    for exchange in state.history:
        model_texts.append(json.dumps({"action": "ask", "question": exchange.question}))
        user_texts.append(f"Their answer:\n{fence(exchange.answer or '')}")
    user_texts[-1] += "\n\n" + turn_instruction(state)
    contents = [text_turn("user", user_texts[0])]
    for question, answer in zip(model_texts, user_texts[1:], strict=True):
        contents += [text_turn("model", question), text_turn("user", answer)]
    return contents


class GeminiIntakeProvider:
    name = "gemini"

    def __init__(self, client: GeminiClient, model: str, gate: RateGate) -> None:
        self.client, self.model, self.gate = client, model, gate
        self.config = structured_config(INTAKE_SYSTEM_INSTRUCTION, intake_json_schema(), 0.4)

    def next_turn(self, state: IntakeState) -> tuple[AskNext | Complete, dict[str, Any]]:
        def parse(response: types.GenerateContentResponse) -> AskNext | Complete:
            text = checked_text(response, self.model)
            return parse_turn_text(text, must_complete=state.must_complete)

        turn = generate_with_repair(
            self.client,
            model=self.model,
            setting="ANALYSIS_MODEL",
            gate=self.gate,
            contents=conversation_contents(state),
            config=self.config,
            parse=parse,
        )
        return turn, {"provider": self.name, "model": self.model}
