"""Min/max scaling to [0, 1], fitted on the training part only and stored in the manifest."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class MinMaxScaler:
    """Maps raw values to [0, 1] with the training part's minimum and maximum."""

    minimum: float
    maximum: float

    @classmethod
    def fit(cls, values: npt.ArrayLike) -> MinMaxScaler:
        """Fit on the training values; a constant series cannot be scaled."""
        array = np.asarray(values, dtype=np.float64)
        minimum, maximum = float(array.min()), float(array.max())
        if not maximum > minimum:
            raise ValueError(
                f"the training values are all equal ({minimum}); a constant series cannot be scaled"
            )
        return cls(minimum, maximum)

    @property
    def span(self) -> float:
        return self.maximum - self.minimum

    def scale(self, values: Any) -> Any:
        """Raw -> [0, 1] (works on floats and numpy arrays alike)."""
        return (values - self.minimum) / self.span

    def unscale(self, values: Any) -> Any:
        """[0, 1] -> raw."""
        return values * self.span + self.minimum

    def to_dict(self) -> dict[str, Any]:
        return {"method": "minmax", "min": self.minimum, "max": self.maximum}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> MinMaxScaler:
        if data.get("method") != "minmax":
            raise ValueError(f"unsupported scaling method {data.get('method')!r}")
        scaler = cls(float(data["min"]), float(data["max"]))
        if not (np.isfinite(scaler.span) and scaler.span > 0):
            raise ValueError(f"scaling range must be finite and positive, got {data}")
        return scaler
