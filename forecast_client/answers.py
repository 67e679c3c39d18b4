"""The service's answers as the client returns them: the JSON bodies, typed."""

from __future__ import annotations

from typing import Any, TypedDict


class Interval(TypedDict):
    level: float
    lower: float
    upper: float


class Prediction(TypedDict):
    session_id: str
    prediction: float
    step: int
    model_version: str
    replayed: bool
    previous_model_version: str | None
    intervals: list[Interval]
    flags: list[str]


class BatchPrediction(TypedDict):
    session_id: str
    predictions: list[float]
    step: int
    model_version: str
    replayed: bool
    previous_model_version: str | None
    intervals: list[list[Interval]]
    flags: list[list[str]]


class Forecast(TypedDict):
    session_id: str
    step: int
    forecasts: list[float]
    model_version: str
    intervals: list[list[Interval]]


class SessionInfo(TypedDict):
    session_id: str
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
