"""Repositories: every SQL statement of the product, one module per aggregate.

Each method runs inside a unit of work (db/uow.py) and returns plain values or frozen
dataclasses, never ORM objects: nothing read depends on the session after the unit
of work ends. Writes take plain values. The analytics statement itself is in
db/analytics_statement.py.
"""

from db.repositories.analytics import AnalyticsRepository, AnalyticsRow
from db.repositories.console import ConsoleRepository
from db.repositories.entries import EntryRepository, EntryRow
from db.repositories.entry_pipeline import EntryPipelineRepository
from db.repositories.intake import IntakeRepository, IntakeSessionRow
from db.repositories.media import MediaRepository
from db.repositories.showcase import GalleryEntry, ShowcaseRepository
from db.repositories.users import UserRepository, UserRow
from db.repositories.visualizations import (
    ClaimedVisualization,
    VisualizationRepository,
    VisualizationRow,
)

__all__ = [
    "AnalyticsRepository",
    "AnalyticsRow",
    "ClaimedVisualization",
    "ConsoleRepository",
    "EntryPipelineRepository",
    "EntryRepository",
    "EntryRow",
    "GalleryEntry",
    "IntakeRepository",
    "IntakeSessionRow",
    "MediaRepository",
    "ShowcaseRepository",
    "UserRepository",
    "UserRow",
    "VisualizationRepository",
    "VisualizationRow",
]
