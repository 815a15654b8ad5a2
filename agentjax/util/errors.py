"""Errors for bad input data, and the raise-or-count policy for skipping bad records."""

from __future__ import annotations

from collections import Counter
from typing import Literal

BadInputMode = Literal["raise", "skip"]


class DataError(ValueError):
    """Bad input: the message names where (`file:line`) and what; `reason` is a short slug for counting skips."""

    def __init__(self, origin: str, reason: str, message: str):
        super().__init__(f"{origin}: {message}" if origin else message)
        self.origin = origin
        self.reason = reason


class BadInputPolicy:
    """Raise on bad input (`raise`) or count it by reason and go on (`skip`); nothing is dropped silently."""

    def __init__(self, mode: BadInputMode = "raise", counts: Counter | None = None):
        if mode not in ("raise", "skip"):
            raise ValueError(f"bad-input mode must be 'raise' or 'skip', got {mode!r}")
        self.mode = mode
        self.counts: Counter = Counter() if counts is None else counts

    def handle(self, error: DataError) -> None:
        """Re-raise `error`, or record it when skipping."""
        if self.mode == "raise":
            raise error
        self.counts[error.reason] += 1
