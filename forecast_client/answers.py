"""The service's answers as the client returns them: the JSON bodies, typed."""

from __future__ import annotations

from typing import Any, TypedDict


class Interval(TypedDict):
    level: float
    lower: float
    upper: float


class Prediction(TypedDict):
    session_id: str
    model: str
    prediction: float
    step: int
    model_version: str
    replayed: bool
    previous_model_version: str | None
    warmup_values: int | None
    intervals: list[Interval]
    flags: list[str]


class BatchPrediction(TypedDict):
    session_id: str
    model: str
    predictions: list[float]
    step: int
    model_version: str
    replayed: bool
    previous_model_version: str | None
    warmup_values: int | None
    intervals: list[list[Interval]]
    flags: list[list[str]]


class Forecast(TypedDict):
    session_id: str
    model: str
    step: int
    forecasts: list[float]
    model_version: str
    warmup_values: int | None
    intervals: list[list[Interval]]


class SessionInfo(TypedDict):
    session_id: str
    model: str
    step: int
    created_at: str
    last_used_at: str
    expires_at: str
    model_version: str
    last_prediction: float | None
    skill: dict[str, Any]


class Reset(TypedDict):
    session_id: str
    step: int


class Deleted(TypedDict):
    session_id: str
    deleted: bool


class HistoryValue(TypedDict):
    step: int
    value: float
    forecast: float | None
    intervals: list[Interval]


class NextForecast(TypedDict):
    step: int
    forecast: float
    intervals: list[Interval]


class History(TypedDict):
    session_id: str
    model: str
    model_version: str
    step: int
    values: list[HistoryValue]
    next: NextForecast | None


class Models(TypedDict):
    models: list[dict[str, Any]]
