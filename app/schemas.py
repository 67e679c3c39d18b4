"""Request and response bodies. Raw (unscaled) values in and out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, create_model
from typing_extensions import TypedDict  # pydantic needs it on Python < 3.12

from app.settings import MAX_INTERVAL_LEVELS, Settings
from forecast_core.artifact import DEFAULT_MODEL, MODEL_NAME_PATTERN

__all__ = ["DEFAULT_MODEL", "MODEL_NAME_PATTERN"]


@dataclass(frozen=True)
class SessionIdRule:
    """The one definition of a valid session id: pattern, schema and error message follow it."""

    characters: str = "A-Za-z0-9._:-"
    min_length: int = 1
    max_length: int = 128

    @property
    def pattern(self) -> str:
        return f"^[{self.characters}]{{{self.min_length},{self.max_length}}}$"

    @property
    def description(self) -> str:
        readable = "A-Z a-z 0-9 " + " ".join(self.characters.removeprefix("A-Za-z0-9"))
        return f"{self.min_length}-{self.max_length} characters of {readable}"


SESSION_ID = SessionIdRule()


ModelName = Annotated[
    Annotated[str, Field(pattern=MODEL_NAME_PATTERN)] | None,
    Field(
        default=None,
        description=(
            "the served model to use (GET /models lists them); default: 'default'. A session "
            "belongs to one model: the same session_id under two models is two sessions"
        ),
        examples=["default"],
    ),
]

SessionId = Annotated[
    str,
    Field(
        pattern=SESSION_ID.pattern,
        min_length=SESSION_ID.min_length,
        max_length=SESSION_ID.max_length,
        description=SESSION_ID.description,
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


def _level_number(value: float) -> float:
    # 80 stays 80 in the answer, not 80.0.
    return int(value) if value.is_integer() else value


Level = Annotated[float, Field(gt=0, lt=100), AfterValidator(_level_number)]
Levels = Annotated[
    list[Level] | None,
    Field(
        default=None,
        max_length=MAX_INTERVAL_LEVELS,
        description=(
            f"interval levels in percent (at most {MAX_INTERVAL_LEVELS}, each strictly between "
            "0 and 100); default: the service's FORECAST_INTERVAL_LEVELS"
        ),
        examples=[[50, 90]],
    ),
]


class _Body(BaseModel):
    # Strict: JSON true is not step 1 and "1.5" is not a number; the schema says so, and so do we.
    model_config = ConfigDict(extra="forbid", strict=True)


class PredictRequest(_Body):
    session_id: SessionId
    value: FiniteFloat
    step: Step = None
    levels: Levels = None
    model: ModelName = None


class PredictBatchRequest(_Body):
    session_id: SessionId
    values: list[FiniteFloat] = Field(min_length=1, description="values in order, oldest first")
    step: Step = None
    levels: Levels = None
    model: ModelName = None


class PredictManyItem(_Body):
    session_id: SessionId
    value: FiniteFloat
    step: Step = None
    model: ModelName = None


_ITEMS_DESCRIPTION = (
    "values of any sessions, applied in order; items naming the same session are applied as "
    "one feed, in order (README, 'Many sessions in one request')"
)


class PredictManyRequest(_Body):
    items: list[PredictManyItem] = Field(min_length=1, description=_ITEMS_DESCRIPTION)
    levels: Levels = None


Horizon = Annotated[int, Field(ge=1), BeforeValidator(_json_integer)]


class ForecastRequest(_Body):
    session_id: SessionId
    horizon: Horizon = Field(description="how many values ahead, each forecast fed back")
    levels: Levels = None
    model: ModelName = None


@dataclass(frozen=True)
class RequestBodies:
    """Request models carrying the configured limits: validation, error and schema in one.

    Built once per app from its settings; routes declare these as their body types.
    """

    predict_batch: type[PredictBatchRequest]
    forecast: type[ForecastRequest]
    predict_many: type[PredictManyRequest]

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestBodies:
        predict_batch = create_model(
            "PredictBatchRequest",
            __base__=PredictBatchRequest,
            __module__=__name__,
            values=(
                list[FiniteFloat],
                Field(
                    min_length=1,
                    max_length=settings.max_values_per_request,
                    description="values in order, oldest first",
                ),
            ),
        )
        forecast = create_model(
            "ForecastRequest",
            __base__=ForecastRequest,
            __module__=__name__,
            horizon=(
                Horizon,
                Field(
                    le=settings.max_horizon,
                    description="how many values ahead, each forecast fed back",
                ),
            ),
        )
        predict_many = create_model(
            "PredictManyRequest",
            __base__=PredictManyRequest,
            __module__=__name__,
            items=(
                list[PredictManyItem],
                Field(
                    min_length=1,
                    max_length=settings.max_items_per_request,
                    description=_ITEMS_DESCRIPTION,
                ),
            ),
        )
        return cls(predict_batch=predict_batch, forecast=forecast, predict_many=predict_many)


class SessionRequest(_Body):
    session_id: SessionId
    model: ModelName = None


class Interval(TypedDict):
    # int | float: 80 stays 80 in every answer, as in /predict's (which is not validated again).
    level: Annotated[
        int | float, Field(description="percent of values the interval is meant to hold")
    ]
    lower: float
    upper: float


Flags = Annotated[
    list[str],
    Field(
        description=(
            "what is unusual about the value just revealed: 'outside_training_range' (beyond "
            "the training values' range by more than 10 % of it), 'outside_interval_<level>' "
            "(outside the widest interval forecast for it)"
        ),
    ),
]


PREVIOUS_MODEL = (
    "set when the session's state was under another version of its model: the state was "
    "rebuilt by replaying the session's history window through this one"
)
WARMUP_VALUES = (
    "with previous_model_version: how many values of the history window warmed the new state"
)


class PredictResponse(TypedDict):
    """/predict's answer: a typed dict, built and serialized on the hot path without validation
    (app.responses.JsonBytesResponse); the schema documents it all the same."""

    session_id: str
    model: Annotated[str, Field(description="the model's name")]
    prediction: Annotated[float, Field(description="forecast of the next value")]
    step: Annotated[int, Field(description="values this session has consumed, this one included")]
    model_version: str
    replayed: Annotated[bool, Field(description="a retry of the last request: nothing advanced")]
    previous_model_version: Annotated[str | None, Field(description=PREVIOUS_MODEL)]
    warmup_values: Annotated[int | None, Field(description=WARMUP_VALUES)]
    intervals: Annotated[list[Interval], Field(description="around the prediction, one per level")]
    flags: Flags


class ErrorBodyDict(TypedDict):
    code: str
    message: str
    details: dict[str, Any]


class ErrorAnswer(TypedDict):
    """An item's or a message's refusal: the one error shape."""

    error: ErrorBodyDict


class PredictManyResponse(TypedDict):
    """/predict/many's answer: one result per item, in order."""

    results: Annotated[
        list[PredictResponse | ErrorAnswer],
        Field(description="per item, in order: /predict's answer, or the item's error"),
    ]


class PredictBatchResponse(BaseModel):
    session_id: str
    model: str = Field(description="the model's name")
    predictions: list[float] = Field(description="forecast after each value, in order")
    step: int
    model_version: str
    replayed: bool = False
    previous_model_version: str | None = Field(default=None, description=PREVIOUS_MODEL)
    warmup_values: int | None = Field(default=None, description=WARMUP_VALUES)
    intervals: list[list[Interval]] = Field(
        default_factory=list, description="one list per prediction, one interval per level"
    )
    flags: list[Flags] = Field(default_factory=list, description="one list per value")


class ForecastResponse(BaseModel):
    session_id: str
    model: str = Field(description="the model's name")
    step: int
    forecasts: list[float]
    model_version: str
    warmup_values: int | None = Field(
        default=None,
        description=(
            "set when the session's state is still under another version of its model: the "
            "forecast comes from its history window replayed through this one (the session is "
            "not changed; its next value rebuilds it)"
        ),
    )
    intervals: list[list[Interval]] = Field(
        default_factory=list, description="one list per step ahead; they widen with the horizon"
    )


class ResetResponse(BaseModel):
    session_id: str
    step: int


class LevelCoverage(BaseModel):
    level: int | float
    coverage: float = Field(description="share of revealed values inside the interval")


class SkillFigures(BaseModel):
    count: int = Field(description="revealed values the figures cover")
    mae: float
    rmse: float
    persistence_rmse: float = Field(description="RMSE of next = last on the same values")
    skill: float | None = Field(description="1 - rmse / persistence_rmse")
    coverage: list[LevelCoverage]


class SessionSkill(BaseModel):
    life: SkillFigures | None = Field(description="since the session started or was reset")
    recent: SkillFigures | None = Field(description="over the last FORECAST_SKILL_WINDOW values")


class SessionInfo(BaseModel):
    session_id: str
    model: str = Field(description="the model's name")
    step: int
    created_at: str
    last_used_at: str
    expires_at: str
    model_version: str
    last_prediction: float | None
    skill: SessionSkill


class SessionsPage(BaseModel):
    sessions: list[SessionInfo] = Field(description="the caller's sessions, in the store's order")
    next_cursor: str | None = Field(
        description="send it as ?cursor= for the next page; null: this was the last page"
    )


class HistoryValue(BaseModel):
    step: int = Field(description="the value's step: values the session had consumed with it")
    value: float
    forecast: float | None = Field(
        description="the one-step forecast served for this value (null: none, a first value)"
    )
    intervals: list[Interval] = Field(
        description="that forecast's intervals, one per configured level (empty: none kept)"
    )


class NextForecast(BaseModel):
    step: int = Field(description="the step of the value it forecasts")
    forecast: float
    intervals: list[Interval]


class SessionHistory(BaseModel):
    session_id: str
    model: str
    model_version: str = Field(description="the model version of the session's state")
    step: int
    values: list[HistoryValue] = Field(
        description="the history window, oldest first: at most FORECAST_SESSION_HISTORY values"
    )
    next: NextForecast | None = Field(description="the forecast of the session's next value")


class RefusedArtifact(BaseModel):
    artifact: str = Field(description="the folder 'latest' led to")
    reason: str
    at: str = Field(description="when it was refused (UTC)")


class ModelInfo(BaseModel):
    name: str
    version: str | None = Field(description="the version served; null: none (see problem)")
    ready: bool
    artifact: str | None = Field(description="the folder served")
    loaded_at: str | None
    problem: str | None = Field(description="why nothing is served")
    refused: RefusedArtifact | None = Field(
        description="the last new artifact that failed its checks; the version above kept serving"
    )


class ModelsResponse(BaseModel):
    models: list[ModelInfo]


class ModelChangeInfo(BaseModel):
    name: str
    previous_version: str | None
    version: str | None
    refused: str | None = Field(description="why the new artifact was not served")


class ReloadResponse(BaseModel):
    changes: list[ModelChangeInfo] = Field(description="what this reload changed or refused")
    models: list[ModelInfo]


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


class NamespaceSessions(BaseModel):
    namespace: str
    name: str | None
    sessions: int
    max_sessions: int | None


class NamespacesResponse(BaseModel):
    sessions: int
    max_sessions: int
    namespaces: list[NamespaceSessions]
