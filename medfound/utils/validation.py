"""Configuration checks that report every problem at once, before any work starts."""
from __future__ import annotations


class Problems:
    """Collects the problems of a configuration so that one error lists them all."""

    def __init__(self) -> None:
        self.items: list[str] = []

    def check(self, ok: bool, message: str) -> None:
        """Records ``message`` unless ``ok``."""
        if not ok:
            self.items.append(message)

    def add(self, message: str) -> None:
        self.items.append(message)

    def raise_if_any(self, what: str) -> None:
        """Raises one ValueError naming ``what`` and listing every recorded problem."""
        if self.items:
            raise ValueError(f"invalid {what}:\n  " + "\n  ".join(self.items))
