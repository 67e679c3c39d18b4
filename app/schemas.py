"""Request and response bodies. Raw (unscaled) values in and out."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

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


def _json_integer(value: Any) -> Any:
    # JSON Schema's "integer" includes 3.0; it excludes true and "3", which lax parsing accepts.
    if isinstance(value, bool | str):
        raise ValueError("must be a JSON integer")
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# The bound goes before the validator, so that it shows in the JSON schema as "minimum".
Step = Annotated[
    Annotated[int, Field(ge=0), BeforeValidator(_json_integer)] | None,
    Field(
        default=None,
        description=(
            "values the session consumed before this request, as the client counts them: equal "
            "to the session's count applies; a resend of the last request replays its answer; "
            "anything else is 409"
        ),
    ),
]


class _Body(BaseModel):
    # Strict: JSON true is not step 1 and "1.5" is not a number; the schema says so, and so do we.
    model_config = ConfigDict(extra="forbid", strict=True)


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
    horizon: Annotated[int, Field(ge=1), BeforeValidator(_json_integer)] = Field(
        description="how many values ahead, each forecast fed back"
    )


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
