"""The demo's intake part: a scripted respondent that holds a few conversations.

It behaves like the API service would: it starts sessions with the producer helpers,
LISTENs on the intake channel, and answers each stored question with the next line of
its script (a closing line when the script runs out), until every session completed.
"""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass, field

from db.listen import listen
from domain.intake import NOTIFY_CHANNEL, next_step, parse_history
from workers import bootstrap
from workers.logging import get_logger
from workers.producer_api import ProducerAPI

log = get_logger("emotionviz.demo.intake")

DEMO_EMAIL = "test@example.com"
CLOSING_ANSWER = "Nothing more to add, thank you for asking."
SCRIPTS: tuple[tuple[str, tuple[str, ...]], ...] = (
    (
        "My manager asked me to present the quarterly results with one hour's notice.",
        (
            "I felt nervous and a bit angry that nobody warned me, maybe a 7.",
            "My hands were shaking while I opened the slides.",
            "I took a deep breath, it went fine, and I was relieved afterwards.",
        ),
    ),
    (
        "My best friend called to say she is moving back to town after three years away.",
        (
            "Thrilled! I would say 9. I actually jumped around the kitchen.",
            "We used to walk by the river every Sunday and I missed that.",
            "I started a list of places we have to go to together.",
        ),
    ),
    (
        "I missed the last train home and had to wait alone at a dark station.",
        (
            "Scared, and lonely too, about 6.",
            "It was very quiet and a man kept walking up and down the platform.",
            "I called my brother and he stayed on the phone until the night bus came.",
        ),
    ),
)


@dataclass
class ScriptedRespondent:
    api: ProducerAPI
    sessions: dict[uuid.UUID, tuple[str, ...]] = field(default_factory=dict)
    user_id: uuid.UUID | None = None
    answered: int = 0
    error: str | None = None

    def reset(self) -> None:
        """Forget earlier demo conversations (only the demo's own scripted ones)."""
        with bootstrap.unit_of_work() as uow:
            uow.showcase.forget_intake_sessions([s for s, _ in SCRIPTS])
            uow.commit()

    def start(self) -> list[uuid.UUID]:
        with bootstrap.unit_of_work() as uow:
            user = uow.users.get_by_email(DEMO_EMAIL)
        assert user is not None, "the seed creates the demo user"
        self.user_id = user.id
        for situation, answers in SCRIPTS:
            self.sessions[self.api.start_intake(self.user_id, situation)] = answers
        return list(self.sessions)

    def run(self, stop: threading.Event) -> None:
        """Answer questions as they are announced; returns when all sessions are done."""
        try:
            with listen(bootstrap.database_direct_url(), NOTIFY_CHANNEL) as announcements:
                while not stop.is_set() and not self._answer_open_questions():
                    # Wake on a notification, or every second to look again regardless.
                    payload = announcements.next(timeout=1.0)
                    if payload is not None:
                        log.debug("question announced", **payload)
        except Exception as exc:  # noqa: BLE001 - reported by the demo, not raised in a thread
            self.error = f"{type(exc).__name__}: {exc}"

    def _answer_open_questions(self) -> bool:
        """Answer every question waiting for us; True when all sessions are complete."""
        assert self.user_id is not None
        complete = 0
        with bootstrap.unit_of_work() as uow:
            rows = uow.intake.get_many(list(self.sessions))
        waiting: list[tuple[uuid.UUID, int]] = []
        for row in rows:
            if row.is_complete:
                complete += 1
                continue
            history = parse_history(row.conversation_history)
            if history and history[-1].answer is None:
                waiting.append((row.id, next_step(history)))
        for session_id, step in waiting:
            script = self.sessions[session_id]
            answer = script[step - 1] if step <= len(script) else CLOSING_ANSWER
            self.api.submit_answer(session_id, self.user_id, step=step, answer=answer)
            self.answered += 1
        return complete == len(self.sessions)
