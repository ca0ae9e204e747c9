"""``emotionviz demo``: the main job. (Foundation version: migrate, seed, show.)"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from db import migrate
from db.models import EmotionEntry, User
from db.seed import seed_dev_data
from workers.runtime import database_url, redact_url, unit_of_work
from workers.settings import Settings


def run(args: argparse.Namespace, settings: Settings) -> int:
    console = Console()
    url = database_url(settings)
    console.print(f"database: {redact_url(url)}")
    migrate.upgrade(url)
    report = seed_dev_data(unit_of_work())
    console.print(f"seeded {report.users_created} users, {report.entries_created} entries")
    table = Table(title="What is in the database")
    for column in ("user", "entries", "first entry", "last entry"):
        table.add_column(column)
    with unit_of_work() as uow:
        rows = uow.session.execute(
            select(
                User.email,
                func.count(EmotionEntry.id),
                func.min(EmotionEntry.created_at),
                func.max(EmotionEntry.created_at),
            )
            .join(EmotionEntry, EmotionEntry.user_id == User.id, isouter=True)
            .group_by(User.email)
            .order_by(User.email)
        )
        for email, count, first, last in rows:
            table.add_row(email, str(count), f"{first:%Y-%m-%d}", f"{last:%Y-%m-%d}")
    console.print(table)
    return 0


def register(add: Callable[..., Any]) -> None:
    add("demo", run, "the main job: services, migrations, sample data, pipeline, gallery")
