"""Library log lines that are not news to the person reading a run's log."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

LIGHTNING_BANNER = "pytorch_lightning.utilities.rank_zero"
"""What Lightning logs whenever it builds a Trainer ("GPU available: ...", a tip to install a
cloud logger): the run logs its own device line once."""
MLFLOW_MIGRATIONS = "mlflow.store.db.utils"
"""MLflow's lines while it sets up a new store's tables."""


@contextmanager
def quieter(logger_name: str) -> Iterator[None]:
    """Within the block, `logger_name` says warnings and errors only; its level is restored
    after, whatever it was."""
    library = logging.getLogger(logger_name)
    level = library.level
    library.setLevel(logging.WARNING)
    try:
        yield
    finally:
        library.setLevel(level)
