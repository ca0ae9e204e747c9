"""Upstream's side of a fleet run: entries written and published through the producer
API, and intake conversations answered as a person would, spread over a window. Upstream
is another service: it reaches PostgreSQL and Redis directly, not through a machine's
proxies."""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine, text

from db.engine import make_session_factory
from db.listen import listen
from db.uow import UnitOfWork
from domain.errors import ConflictError, EmotionVizError
from domain.intake import NOTIFY_CHANNEL
from workers.messaging.broker import build_broker
from workers.messaging.producer import Producer
from workers.producer_api import ProducerAPI
from workers.settings import Settings


@dataclass
class Published:
    entries: dict[str, str] = field(default_factory=dict)  # entry id -> marker
    sessions: dict[str, str] = field(default_factory=dict)  # session id -> marker
    published_at: dict[str, float] = field(default_factory=dict)  # entry/session -> time
    answers: int = 0
    errors: list[str] = field(default_factory=list)


class Upstream:
    def __init__(self, db_url: str, redis_url: str, namespace: str, tag: str) -> None:
        self.tag = tag
        self.db_url = db_url
        url = db_url.replace("postgresql://", "postgresql+psycopg://", 1)
        self.engine = create_engine(url, pool_size=4)
        settings = Settings(_env_file=None, redis_namespace=namespace)  # type: ignore[call-arg]
        self.broker = build_broker(settings, redis_url)
        factory = make_session_factory(self.engine)
        self.api = ProducerAPI(lambda: UnitOfWork(factory, Producer(self.broker)))
        self.published = Published()
        self.lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def users(self, count: int) -> list[uuid.UUID]:
        with self.engine.begin() as conn:
            return [
                conn.execute(
                    text(
                        "INSERT INTO users (email, hashed_password, name) "
                        "VALUES (:e, 'x', 'Fleet') RETURNING id"
                    ),
                    {"e": f"{self.tag}-{u}@example.com"},
                ).scalar_one()
                for u in range(count)
            ]

    def start(self, entries: int, conversations: int, window_s: float) -> None:
        users = self.users(max(1, entries // 5, conversations))
        start = time.time()
        self._threads = [
            threading.Thread(
                target=self._entries, args=(entries, users, start, window_s), daemon=True
            ),
            threading.Thread(
                target=self._conversations,
                args=(conversations, users, start, window_s),
                daemon=True,
            ),
        ]
        for thread in self._threads:
            thread.start()

    def publishing(self) -> bool:
        return any(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=10)
        self.broker.close()
        self.engine.dispose()

    def _entries(self, n: int, users: list[uuid.UUID], start: float, window_s: float) -> None:
        for i in range(n):
            if self._stop.is_set():
                return
            marker = f"{self.tag}e{i:05d}x"
            user = users[i % len(users)]
            try:
                with self.engine.begin() as conn:
                    entry = conn.execute(
                        text(
                            "INSERT INTO emotion_entries (user_id, situation, emotions, intensity) "
                            "VALUES (:u, :s, ARRAY['anxiety','joy'], 0.6) RETURNING id"
                        ),
                        {"u": user, "s": f"Situation {marker}: a long day at work"},
                    ).scalar_one()
                with self.lock:
                    self.published.entries[str(entry)] = marker
                    self.published.published_at[str(entry)] = time.time()
                self.api.entry_created(entry, user)
            except EmotionVizError as exc:  # a refused publish: the reconciler's work
                with self.lock:
                    self.published.errors.append(f"entry {marker}: {exc}")
            time.sleep(max(0.0, start + window_s * (i + 1) / n - time.time()))

    def _conversations(self, n: int, users: list[uuid.UUID], start: float, window_s: float) -> None:
        """Start ``n`` sessions over the first half of the window and answer every
        question as it is announced (NOTIFY on the direct URL), until each completes."""
        if n == 0:
            return
        owner: dict[str, uuid.UUID] = {}
        answered: set[tuple[str, int]] = set()
        due = [start + (window_s / 2) * i / n for i in range(n)]
        with listen(self.db_url, NOTIFY_CHANNEL) as announcements:
            while not self._stop.is_set():
                now = time.time()
                while due and due[0] <= now:
                    due.pop(0)
                    i = len(owner)
                    marker = f"{self.tag}s{i:04d}x"
                    user = users[i % len(users)]
                    try:
                        session = self.api.start_intake(
                            user, f"Situation {marker}: nervous before an exam"
                        )
                    except EmotionVizError as exc:
                        with self.lock:
                            self.published.errors.append(f"session {marker}: {exc}")
                        owner[marker] = user
                        continue
                    owner[str(session)] = user
                    with self.lock:
                        self.published.sessions[str(session)] = marker
                        self.published.published_at[str(session)] = time.time()
                heard: dict[str, Any] | None = announcements.next(timeout=0.2)
                if heard is None:
                    if not due and self._all_complete(owner):
                        return
                    continue
                session_id, step = str(heard.get("session_id")), int(heard.get("step", 0))
                if session_id not in owner or (session_id, step) in answered:
                    continue  # another run's, or a repeated announcement
                answered.add((session_id, step))
                try:
                    self.api.submit_answer(
                        uuid.UUID(session_id), owner[session_id], step=step, answer=f"answer {step}"
                    )
                    with self.lock:
                        self.published.answers += 1
                except ConflictError:
                    pass  # already answered or complete: a repeated question
                except EmotionVizError as exc:
                    with self.lock:
                        self.published.errors.append(f"answer {session_id}/{step}: {exc}")

    def _all_complete(self, owner: dict[str, uuid.UUID]) -> bool:
        ids = [s for s in owner if len(s) == 36]
        if not ids:
            return True
        with self.engine.connect() as conn:
            open_ = conn.execute(
                text(
                    "SELECT count(*) FROM intake_sessions "
                    "WHERE id = ANY(CAST(:ids AS uuid[])) AND NOT is_complete"
                ),
                {"ids": ids},
            ).scalar_one()
        return int(open_) == 0
