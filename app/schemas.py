"""Request and response bodies. Raw (unscaled) values in and out."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

SESSION_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"

SessionId = Annotated[
    str,
    Field(
        pattern=SESSION_ID_PATTERN,
        min_length=1,
        max_length=128,
        description="1-128 characters of A-Z a-z 0-9 . _ : -",
        examples=["sensor-42"],
    ),
]
# Python's JSON parser accepts NaN and Infinity; a forecast of them is meaningless.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Step = Annotated[
    int | None,
    Field(
        default=None,
        ge=0,
        description=(
            "values the session consumed before this request, as the client counts them: equal "
            "to the session's count applies; a resend of the last request replays its answer; "
            "anything else is 409"
        ),
    ),
]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(_Body):
    session_id: SessionId
    value: FiniteFloat
    step: Step = None


class PredictBatchRequest(_Body):
    session_id: SessionId
    values: list[FiniteFloat] = Field(min_length=1)
    step: Step = None


class ForecastRequest(_Body):
    session_id: SessionId
    horizon: int = Field(ge=1, description="how many values ahead, each forecast fed back")


class SessionRequest(_Body):
    session_id: SessionId


class PredictResponse(BaseModel):
    session_id: str
    prediction: float = Field(description="forecast of the next value")
    step: int = Field(description="values this session has consumed, this one included")
    model_version: str
    replayed: bool = Field(False, description="a retry of the last request: nothing advanced")
    previous_model_version: str | None = Field(
        None, description="set when the session was under another model: its state restarted"
    )


class PredictBatchResponse(BaseModel):
    session_id: str
    predictions: list[float] = Field(description="forecast after each value, in order")
    step: int
    model_version: str
    replayed: bool = False
    previous_model_version: str | None = None


class ForecastResponse(BaseModel):
    session_id: str
    step: int
    forecasts: list[float]
    model_version: str


class ResetResponse(BaseModel):
    session_id: str
    step: int


class SessionInfo(BaseModel):
    session_id: str
    step: int
    created_at: str
    last_used_at: str
    expires_at: str
    model_version: str
    last_prediction: float | None


class DeleteResponse(BaseModel):
    session_id: str
    deleted: bool


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    ready: bool
    model_version: str | None
    store: str
    problems: list[str]


class ErrorBody(BaseModel):
    """Every error has this shape."""

    code: str = Field(examples=["step_conflict"])
    message: str = Field(description="what went wrong and what to do about it")
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    error: ErrorBody
