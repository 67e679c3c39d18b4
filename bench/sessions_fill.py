"""Fill a session store with many sessions, as the wrk script names them (bench/predict.lua)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from app.auth import OPEN_NAMESPACE, session_key
from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.session_history import as_array
from app.session_rules import SessionRecord, feed
from app.settings import Settings
from app.stores.base import SessionStore
from forecast_core.artifact import load_artifact

# Concurrent writes in flight while filling: enough for the SQLite writer to group its commits
# (256 a commit) and for Redis round trips to overlap, within the Redis client's connection pool.
_IN_FLIGHT = 64


def wrk_session_id(index: int) -> str:
    """The id bench/predict.lua gives session ``index`` (one wrk thread)."""
    return f"t1-{index}"


def session_after_one_step(model_dir: Path, now: float) -> SessionRecord:
    """A record as /predict leaves it under the model in ``model_dir`` and the default settings
    (state, interval tracking and all), once a second value has revealed a forecast's error."""
    artifact = load_artifact(model_dir)
    forecaster = Forecaster(artifact.session_step(), artifact.manifest)
    settings = Settings()
    policy = IntervalPolicy.for_settings(artifact.manifest.calibration, settings)
    record, _ = feed(
        None, forecaster, policy, [0.4, 0.5], None, now, history=settings.session_history
    )
    assert record is not None
    return record


async def fill(store: SessionStore, count: int, record: SessionRecord) -> None:
    """Write ``count`` sessions (ids of :func:`wrk_session_id`) into ``store``."""

    def put(_current: SessionRecord | None) -> tuple[SessionRecord, None]:
        # Each session its own state array, as in service: shared, the memory store would
        # measure a dictionary of references.
        tracking = record.tracking.copy() if record.tracking is not None else None
        window = as_array(record.history)
        history = window.copy() if window is not None else None
        copied = record._replace(state=record.state.copy(), tracking=tracking, history=history)
        return copied, None

    for start in range(0, count, _IN_FLIGHT):
        stop = min(count, start + _IN_FLIGHT)
        await asyncio.gather(
            *(
                store.apply(session_key(OPEN_NAMESPACE, wrk_session_id(index)), put)
                for index in range(start, stop)
            )
        )
