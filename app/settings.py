"""Service settings, all from ``FORECAST_*`` environment variables (see README)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

if TYPE_CHECKING:
    from app.keys import KeyDefaults

# Compare-and-set attempts before a request gives up with 503 session_busy.
DEFAULT_CAS_ATTEMPTS = 50
# How long a Redis reply may take; a replica confirmation (WAIT) must fit well inside it.
REDIS_SOCKET_TIMEOUT_S = 2.0
# Interval levels at most, configured or asked for by one request.
MAX_INTERVAL_LEVELS = 5
# Sessions one page of GET /sessions may hold.
MAX_SESSIONS_PAGE = 500


# A session's history window at most (FORECAST_SESSION_HISTORY): bounds the record and the
# replay after a model change.
MAX_SESSION_HISTORY = 10_000


def _parse_levels(text: str) -> tuple[float, ...]:
    levels: list[float] = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        try:
            level = float(part)
        except ValueError:
            raise ValueError(f"FORECAST_INTERVAL_LEVELS: {part!r} is not a number") from None
        if not 0 < level < 100:
            raise ValueError(f"FORECAST_INTERVAL_LEVELS: {part} is not strictly between 0 and 100")
        # 80, not 80.0, in every answer that names the level.
        levels.append(int(level) if level.is_integer() else level)
    if len(levels) > MAX_INTERVAL_LEVELS:
        raise ValueError(f"FORECAST_INTERVAL_LEVELS: at most {MAX_INTERVAL_LEVELS} levels")
    return tuple(sorted(set(levels)))


class Settings(BaseSettings):
    """Everything the service can be told; nonsense is refused at start-up."""

    model_config = SettingsConfigDict(env_prefix="FORECAST_", extra="ignore", frozen=True)

    model_dir: Path = Field(
        default=Path("models"),
        description=(
            "models folder: its 'latest' is the model 'default', each '<name>/latest' the "
            "model <name>; or one artifact folder (served as 'default')"
        ),
    )
    model_poll_s: float = Field(
        default=5.0,
        ge=0,
        description="how often each replica looks for a changed 'latest' (0: only on reload)",
    )
    session_history: int = Field(
        default=256,
        ge=0,
        le=MAX_SESSION_HISTORY,
        description=(
            "raw values each session keeps (its history window, replayed through a new model "
            "after a model change; 0: none, a model change restarts from zero state)"
        ),
    )
    store: Literal["memory", "sqlite", "redis"] = Field(
        default="sqlite", description="where session state lives"
    )
    data_dir: Path = Field(default=Path("data"), description="folder of the SQLite session file")
    metrics_share_dir: Path | None = Field(
        default=None,
        description="folder where one server's workers share their metrics (app.metrics_share);"
        " app.serve makes one per run for several workers",
    )
    redis_url: str = Field(default="redis://127.0.0.1:6379/0", description="Redis store URL")
    redis_prefix: str = Field(
        default="forecast",
        pattern=r"^[^{}]*$",
        description="prefix of the service's Redis keys (no braces: the cluster's hash tags)",
    )
    redis_min_replicas: int = Field(
        default=0,
        ge=0,
        le=16,
        description="acknowledge a step only once this many Redis replicas have it (WAIT)",
    )
    redis_wait_timeout_ms: int = Field(
        default=1000,
        ge=1,
        le=int(REDIS_SOCKET_TIMEOUT_S * 1000) // 2,
        description="how long a step waits for its replica confirmations before 503",
    )
    session_ttl_s: int = Field(default=3600, ge=1, description="idle sessions expire after this")
    max_sessions: int = Field(default=100_000, ge=1, description="live sessions at most")
    max_values_per_request: int = Field(default=1000, ge=1, le=100_000)
    max_items_per_request: int = Field(
        default=1000, ge=1, le=100_000, description="items in one /predict/many"
    )
    max_horizon: int = Field(default=1000, ge=1, le=100_000)
    max_body_bytes: int = Field(default=256 * 1024, ge=1024, description="larger bodies get 413")
    check_tolerance: float = Field(
        default=1e-5,
        gt=0,
        description="start-up agreement needed between the compiled step and Keras",
    )
    api_keys: str = Field(
        default="",
        description=(
            "comma-separated API keys or sha256:<hex> of keys, 'admin:' before an admin key; "
            "empty: open (unless api_keys_file is set)"
        ),
    )
    api_keys_file: Path | None = Field(
        default=None,
        description="TOML file of keys with scopes and per-key limits, re-read when it changes",
    )
    api_keys_reload_s: float = Field(
        default=2.0,
        gt=0,
        le=60,
        description="how often each replica looks for a change of the keys file",
    )
    max_sessions_per_key: int | None = Field(
        default=None,
        ge=1,
        description="live sessions per API key at most; default: max_sessions / number of keys",
    )
    rate_limit: str = Field(
        default="",
        description="requests per second per API key, e.g. '200/s burst 400'; empty: none",
    )
    store_retry_attempts: int = Field(
        default=DEFAULT_CAS_ATTEMPTS, ge=1, description="compare-and-set attempts"
    )
    opentelemetry: bool = Field(
        default=False,
        description=(
            "FastAPI's native OpenTelemetry spans, metrics and logs (exported by the global "
            "providers); off by default, as its per-request checks cost throughput even with "
            "nothing configured"
        ),
    )

    interval_levels: str = Field(
        default="80,95",
        description=(
            "comma-separated interval levels in percent that every forecast carries and each "
            "session adapts; empty: no intervals"
        ),
    )
    interval_adaptation_rate: float = Field(
        default=0.05,
        gt=0,
        le=1,
        description="how fast a session's interval widths follow its misses (log-radius step)",
    )
    skill_window: int = Field(
        default=50, ge=1, le=10_000, description="recent values in each session's live skill"
    )

    @property
    def interval_level_values(self) -> tuple[float, ...]:
        """``interval_levels`` as numbers (checked at start-up)."""
        return _parse_levels(self.interval_levels)

    @field_validator("metrics_share_dir", mode="before")
    @classmethod
    def _no_folder_when_empty(cls, value: object) -> object:
        # An empty variable means none, not the working directory.
        return None if value == "" else value

    @field_validator("interval_levels")
    @classmethod
    def _check_interval_levels(cls, value: str) -> str:
        _parse_levels(value)  # raises ValueError with what is wrong
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_api_keys(cls, value: str) -> str:
        from app.auth import ApiKeys

        ApiKeys.from_spec(value)  # raises ValueError with what is wrong
        return value

    @field_validator("rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        from app.rate_limit import parse_rate_limit

        parse_rate_limit(value)  # raises ValueError with what is wrong
        return value

    @model_validator(mode="after")
    def _one_source_of_keys(self) -> Settings:
        if self.api_keys.strip() and self.api_keys_file is not None:
            raise ValueError(
                "set FORECAST_API_KEYS or FORECAST_API_KEYS_FILE, not both "
                "(a key left in the environment could not be rotated out through the file)"
            )
        return self

    def key_defaults(self) -> KeyDefaults:
        """The limits every key has unless the keys file overrides them."""
        from app.keys import KeyDefaults
        from app.rate_limit import parse_rate_limit

        return KeyDefaults(
            self.max_sessions, self.max_sessions_per_key, parse_rate_limit(self.rate_limit)
        )

    @model_validator(mode="after")
    def _check_redis_url(self) -> Settings:
        if self.store == "redis" and not self.redis_url.startswith(
            ("redis://", "rediss://", "unix://")
        ):
            raise ValueError("FORECAST_REDIS_URL must start with redis://, rediss:// or unix://")
        return self


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment."""
    return Settings()
