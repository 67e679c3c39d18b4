"""What the network sees: the values themselves (level) or their first differences.

A difference model forecasts ``last + shrink * difference``; ``shrink`` in [0, 1] is fitted on the
selection window, and ``shrink = 0`` is exactly the persistence forecast (next = last).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any


class TransformKind(StrEnum):
    LEVEL = "level"
    DIFFERENCE = "difference"


@dataclass(frozen=True)
class Transform:
    """A transform and, for a difference model, its shrink factor."""

    kind: TransformKind
    shrink: float = 1.0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.shrink) and 0.0 <= self.shrink <= 1.0):
            raise ValueError(f"shrink must be in [0, 1], got {self.shrink}")
        if self.kind is TransformKind.LEVEL and self.shrink != 1.0:
            raise ValueError("a level model has no shrink factor")

    @classmethod
    def level(cls) -> Transform:
        return cls(TransformKind.LEVEL)

    @classmethod
    def difference(cls, shrink: float = 1.0) -> Transform:
        return cls(TransformKind.DIFFERENCE, shrink)

    @property
    def is_difference(self) -> bool:
        return self.kind is TransformKind.DIFFERENCE

    def to_dict(self) -> dict[str, Any]:
        """The manifest's ``transform`` field."""
        if self.is_difference:
            return {"kind": self.kind.value, "shrink": self.shrink}
        return {"kind": self.kind.value}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Transform:
        kind = TransformKind(str(data.get("kind")))
        if kind is TransformKind.DIFFERENCE:
            return cls.difference(float(data["shrink"]))
        return cls.level()
