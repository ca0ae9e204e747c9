"""After an operator's change is committed: say so plainly if its messages were not sent."""

from __future__ import annotations

from typing import TYPE_CHECKING

from domain.errors import EmotionVizError

if TYPE_CHECKING:
    from db.uow import UnitOfWork


def require_published(uow: UnitOfWork) -> None:
    """After a commit: the change is saved; say so plainly if its messages were not."""
    if uow.publish_error:
        raise EmotionVizError(
            f"saved, but {len(uow.unpublished)} messages could not be published "
            f"({uow.publish_error}); 'emotionviz reconcile' (or the scheduler) publishes them"
        )
