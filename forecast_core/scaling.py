"""Min/max scaling to [0, 1] of what the network sees, fitted on training data only."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

# A range narrower than this fraction of its magnitude is numerically a single value (the
# differences of 0.0, 0.1, ..., 0.9 differ in their last bits); see MinMaxScaler.fit.
DEGENERATE_RELATIVE_SPAN = 1e-9


@dataclass(frozen=True)
class MinMaxScaler:
    """Maps raw values to [0, 1] with a training minimum and maximum."""

    minimum: float
    maximum: float

    def __post_init__(self) -> None:
        if not (np.isfinite(self.minimum) and np.isfinite(self.maximum)):
            raise ValueError(f"scaling range must be finite, got {self.minimum}, {self.maximum}")
        if not (self.maximum > self.minimum and np.isfinite(self.maximum - self.minimum)):
            raise ValueError(
                f"scaling range must be positive, got minimum {self.minimum}, "
                f"maximum {self.maximum}"
            )

    @classmethod
    def fit(cls, values: npt.ArrayLike, *, widen_constant: bool = False) -> MinMaxScaler:
        """Fit on training values.

        A constant series cannot be scaled and is refused, unless ``widen_constant``: then the
        range becomes centre +- its magnitude, so a constant difference maps to 0.5 (a series
        growing by the same step each time is a perfectly good series to forecast).
        """
        array = np.asarray(values, dtype=np.float64)
        minimum, maximum = float(array.min()), float(array.max())
        magnitude = max(abs(minimum), abs(maximum))
        if maximum - minimum > DEGENERATE_RELATIVE_SPAN * magnitude:
            return cls(minimum, maximum)
        if not widen_constant or magnitude == 0.0:
            raise ValueError(
                f"the training values are all equal ({minimum}); a constant series cannot be scaled"
            )
        centre = 0.5 * (minimum + maximum)
        return cls(centre - magnitude, centre + magnitude)

    @property
    def span(self) -> float:
        return self.maximum - self.minimum

    def scale(self, values: Any) -> Any:
        """Raw -> [0, 1] (works on floats and numpy arrays alike)."""
        return (values - self.minimum) / self.span

    def unscale(self, values: Any) -> Any:
        """[0, 1] -> raw."""
        return values * self.span + self.minimum
