"""Models change without a restart, several serve side by side, sessions keep their memory.

On the ASGI transport: a models folder whose ``latest`` is switched between two trained
artifacts (``POST /models/reload``, or the poller on an explicit trigger), a corrupt artifact,
named models, the history window and its replay. Two replicas under load switching together:
tests/test_faults.py (bench/fault_load.py).
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.auth import session_key
from app.main import create_app
from app.settings import Settings
from bench.local import SwitchableModels
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio

WINDOW = [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6]


@pytest.fixture
def models(tmp_path: Path, tutorial_models_dir: Path, other_models_dir: Path) -> SwitchableModels:
    """A models folder serving the tutorial model, with the other model beside it."""
    folder = SwitchableModels(tmp_path / "models")
    folder.point_at(folder.add(tutorial_models_dir / "latest"))
    folder.add(other_models_dir / "latest")
    return folder


def _version(models_dir: Path) -> str:
    return (models_dir / "latest").resolve().name


def _settings(folder: Path, tmp_path: Path, store: str, request: pytest.FixtureRequest, **extra):
    values: dict[str, object] = {
        "model_dir": folder,
        "store": store,
        "data_dir": tmp_path / "data",
        "model_poll_s": 0,
        **extra,
    }
    if store == "redis":
        server = request.getfixturevalue("redis_server")
        values |= {"redis_url": server.url, "redis_prefix": f"lifecycle-{tmp_path.name}"}
    return Settings.model_validate(values)


async def _feed(
    client: httpx.AsyncClient, session: str, values: list[float], **extra: object
) -> dict[str, Any]:
    answer: dict[str, Any] = {}
    for value in values:
        body = {"session_id": session, "value": value, **extra}
        response = await client.post("/predict", json=body)
        assert response.status_code == 200, response.text
        answer = response.json()
    return answer


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "sqlite", "redis"])
async def test_a_switched_latest_is_served_and_sessions_replay_their_window(
    store: str,
    models: SwitchableModels,
    tutorial_models_dir: Path,
    other_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    old, new = _version(tutorial_models_dir), _version(other_models_dir)
    settings = _settings(models.folder, tmp_path, store, request, session_history=5)
    async with asgi_client(settings) as client:
        await _feed(client, "s", WINDOW, step=None)
        assert (await client.get("/model")).json()["version"] == old

        models.point_at(new)
        reload = (await client.post("/models/reload")).json()
        assert reload["changes"] == [
            {"name": "default", "previous_version": old, "version": new, "refused": None}
        ]
        assert (await client.get("/model")).json()["version"] == new
        # /forecast replays without changing the session...
        ahead = (await client.post("/forecast", json={"session_id": "s", "horizon": 3})).json()
        assert ahead["model_version"] == new and ahead["warmup_values"] == 5

        answer = await _feed(client, "s", [0.7], step=len(WINDOW))
        assert answer["previous_model_version"] == old and answer["model_version"] == new
        assert answer["warmup_values"] == 5 and answer["step"] == len(WINDOW) + 1
        # ... and equals what a fresh new-model session fed the window (the last 5) gives.
        fresh = await client.post(
            "/predict/batch", json={"session_id": "fresh", "values": WINDOW[-5:]}
        )
        assert fresh.json()["predictions"][-1] == ahead["forecasts"][0]
        same = await _feed(client, "fresh", [0.7])
        assert answer["prediction"] == same["prediction"]
        assert answer["intervals"] == same["intervals"]

        later = await _feed(client, "s", [0.8], step=len(WINDOW) + 1)
        assert later["previous_model_version"] is None and later["warmup_values"] is None
        assert later["prediction"] == (await _feed(client, "fresh", [0.8]))["prediction"]
        # Live skill restarted with the new model: only the value after the switch counts.
        skill = (await client.get("/sessions/s")).json()["skill"]
        assert skill["life"]["count"] == 1


@pytest.mark.slow
async def test_a_corrupt_artifact_is_refused_and_the_old_model_keeps_serving(
    models: SwitchableModels,
    tutorial_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    caplog: pytest.LogCaptureFixture,
) -> None:
    old = _version(tutorial_models_dir)
    broken = models.folder / "20990101T000000000000Z-broken"
    broken.mkdir()
    for name in ("manifest.json", "weights.npz"):
        (broken / name).write_bytes((models.folder / old / name).read_bytes())
    (broken / "weights.npz").write_bytes(b"corrupt")
    settings = _settings(models.folder, tmp_path, "memory", request)
    async with asgi_client(settings) as client:
        await _feed(client, "s", [0.1])
        models.point_at(broken.name)
        with caplog.at_level(logging.ERROR):
            reload = (await client.post("/models/reload")).json()
        (change,) = reload["changes"]
        assert change["version"] == old and "fails its checksum" in change["refused"]
        assert (await client.get("/ready")).status_code == 200
        described = (await client.get("/model")).json()
        assert described["version"] == old
        assert described["refused"]["artifact"] == str(broken.resolve())
        assert "fails its checksum" in described["refused"]["reason"]
        (listed,) = (await client.get("/models")).json()["models"]
        assert listed["version"] == old and "fails its checksum" in listed["refused"]["reason"]
        answer = await _feed(client, "s", [0.2], step=1)
        assert answer["model_version"] == old and answer["previous_model_version"] is None
        # Looking again does not retry the same broken files.
        assert (await client.post("/models/reload")).json()["changes"] == []
        # Rolling back is pointing latest back: nothing is refused any more.
        models.point_at(old)
        assert (await client.post("/models/reload")).json()["changes"] == []
        assert "refused" not in (await client.get("/model")).json()
    refusals = [r.getMessage() for r in caplog.records if "refused" in r.getMessage()]
    assert len(refusals) == 1 and "fails its checksum" in refusals[0] and old in refusals[0]


async def test_the_poller_swaps_a_changed_latest_in(
    models: SwitchableModels,
    tutorial_models_dir: Path,
    other_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """The poll, driven by an explicit trigger instead of a timer."""
    polls: asyncio.Queue[None] = asyncio.Queue()
    settings = _settings(models.folder, tmp_path, "memory", request)
    app = create_app(settings, poll_wait=polls.get)
    async with LifespanManager(app, startup_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            assert (await client.get("/model")).json()["version"] == _version(tutorial_models_dir)
            models.point_at(_version(other_models_dir))
            served = _version(tutorial_models_dir)
            await polls.put(None)
            for _ in range(600):  # the load and check run in a worker thread
                served = (await client.get("/model")).json()["version"]
                if served != _version(tutorial_models_dir):
                    break
                await asyncio.sleep(0.05)
            assert served == _version(other_models_dir)


@pytest.fixture
def named_root(tmp_path: Path, tutorial_models_dir: Path, other_models_dir: Path) -> Path:
    """A models folder with the default model and two named ones, 'alpha' and 'beta'."""
    root = tmp_path / "models"
    SwitchableModels(root).point_at(SwitchableModels(root).add(tutorial_models_dir / "latest"))
    for name, source in (("alpha", tutorial_models_dir), ("beta", other_models_dir)):
        named = SwitchableModels(root, name)
        named.point_at(named.add(source / "latest"))
    return root


@pytest.mark.slow
async def test_two_named_models_serve_the_same_session_id_as_two_sessions(
    named_root: Path,
    tmp_path: Path,
    tutorial_models_dir: Path,
    other_models_dir: Path,
    request: pytest.FixtureRequest,
) -> None:
    root = named_root
    settings = _settings(root, tmp_path, "sqlite", request)
    async with asgi_client(settings) as client:
        listed = (await client.get("/models")).json()["models"]
        assert [(m["name"], m["version"]) for m in listed] == [
            ("alpha", _version(tutorial_models_dir)),
            ("beta", _version(other_models_dir)),
            ("default", _version(tutorial_models_dir)),
        ]
        a = await _feed(client, "same", [0.1, 0.2], model="alpha")
        b = await _feed(client, "same", [0.5], model="beta")
        assert (a["model"], a["step"]) == ("alpha", 2) and (b["model"], b["step"]) == ("beta", 1)
        assert b["model_version"] == _version(other_models_dir)
        # The default model's session of that id is a third one, not yet fed.
        assert (await client.get("/sessions/same")).status_code == 404
        info = (await client.get("/sessions/same", params={"model": "alpha"})).json()
        assert info["model"] == "alpha" and info["step"] == 2
        history = (await client.get("/sessions/same/history", params={"model": "beta"})).json()
        assert [v["value"] for v in history["values"]] == [0.5]
        reset = await client.post("/reset", json={"session_id": "same", "model": "beta"})
        assert reset.status_code == 200
        assert (await client.get("/sessions/same", params={"model": "alpha"})).json()["step"] == 2
        deleted = await client.delete("/sessions/same", params={"model": "alpha"})
        assert deleted.json()["deleted"] is True
        assert (await client.get("/sessions/same", params={"model": "beta"})).json()["step"] == 0
        unknown = await client.post("/predict", json={"session_id": "x", "value": 1, "model": "no"})
        assert unknown.status_code == 404
        assert unknown.json()["error"]["code"] == "model_not_found"
        assert unknown.json()["error"]["details"]["served"] == ["alpha", "beta", "default"]


def test_the_default_model_keeps_the_session_keys_sessions_had_before() -> None:
    assert session_key("public", "s-1") == "public/s-1"
    assert session_key("public", "s-1", "default") == "public/s-1"
    assert session_key("public", "s-1", "beta") == "public/beta/s-1"


def _bounds(intervals: list[dict[str, Any]]) -> list[float]:
    return [bound for i in intervals for bound in (i["level"], i["lower"], i["upper"])]


async def test_history_lists_values_their_forecasts_and_intervals(
    tutorial_models_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from app.services import ModelSlot

    settings = _settings(tutorial_models_dir, tmp_path, "memory", request, session_history=4)
    model: ModelSlot = request.getfixturevalue("tutorial_model")
    async with asgi_client(settings, model) as client:
        answers = []
        for value in [0.0, 0.1, 0.2]:
            response = await client.post("/predict", json={"session_id": "h", "value": value})
            answers.append(response.json())
        batch = await client.post("/predict/batch", json={"session_id": "h", "values": [0.3, 0.4]})
        history = (await client.get("/sessions/h/history")).json()
    assert history["step"] == 5 and history["model"] == "default"
    # The last 4 values, with the forecast served for each (made after the value before it).
    assert [v["step"] for v in history["values"]] == [2, 3, 4, 5]
    assert [v["value"] for v in history["values"]] == [0.1, 0.2, 0.3, 0.4]
    served = [a["prediction"] for a in answers] + batch.json()["predictions"]
    assert [v["forecast"] for v in history["values"]] == served[:4]
    served_intervals = [a["intervals"] for a in answers] + batch.json()["intervals"]
    for entry, intervals in zip(history["values"], served_intervals[:4], strict=True):
        assert [i["level"] for i in entry["intervals"]] == [80, 95]
        assert _bounds(entry["intervals"]) == pytest.approx(_bounds(intervals), rel=1e-6)
    assert history["next"]["step"] == 6 and history["next"]["forecast"] == served[-1]
    expected = _bounds(served_intervals[-1])
    assert _bounds(history["next"]["intervals"]) == pytest.approx(expected, rel=1e-6)


async def test_a_first_value_has_no_forecast_in_the_history(
    tutorial_models_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    settings = _settings(tutorial_models_dir, tmp_path, "memory", request)
    async with asgi_client(settings, request.getfixturevalue("tutorial_model")) as client:
        await client.post("/predict", json={"session_id": "one", "value": 0.3})
        history = (await client.get("/sessions/one/history")).json()
        missing = await client.get("/sessions/none/history")
    (first,) = history["values"]
    assert first == {"step": 1, "value": 0.3, "forecast": None, "intervals": []}
    assert missing.status_code == 404


@pytest.mark.slow
async def test_the_python_client_speaks_for_one_model(
    named_root: Path, other_models_dir: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    from forecast_client.client import AsyncForecastClient

    app = create_app(_settings(named_root, tmp_path, "memory", request))
    async with LifespanManager(app, startup_timeout=120) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with AsyncForecastClient("http://t", transport=transport, model="beta") as beta:
            answer = await beta.predict("c", 0.5)
            await beta.predict("c", 0.6)
            history = await beta.history("c")
            info = await beta.session("c")
            listed = await beta.models()
        async with AsyncForecastClient("http://t", transport=transport) as default:
            assert (await default.predict("c", 0.5))["step"] == 1  # another session
    assert answer["model"] == "beta" and answer["model_version"] == _version(other_models_dir)
    assert [v["value"] for v in history["values"]] == [0.5, 0.6] and history["model"] == "beta"
    assert info["step"] == 2 and info["model"] == "beta"
    assert [m["name"] for m in listed["models"]] == ["alpha", "beta", "default"]


@pytest.mark.slow
async def test_predict_many_items_name_their_models(
    named_root: Path, tmp_path: Path, other_models_dir: Path, request: pytest.FixtureRequest
) -> None:
    settings = _settings(named_root, tmp_path, "memory", request)
    async with asgi_client(settings) as client:
        items = [
            {"session_id": "same", "value": 0.1, "model": "alpha"},
            {"session_id": "same", "value": 0.5, "model": "beta"},
            {"session_id": "same", "value": 0.2, "model": "alpha"},
            {"session_id": "same", "value": 0.3},
            {"session_id": "same", "value": 0.4, "model": "no"},
        ]
        response = await client.post("/predict/many", json={"items": items})
        assert response.status_code == 207
        results = response.json()["results"]
        assert [(r["model"], r["step"]) for r in results[:4]] == [
            ("alpha", 1), ("beta", 1), ("alpha", 2), ("default", 1),
        ]  # fmt: skip
        assert results[1]["model_version"] == _version(other_models_dir)
        assert results[4]["error"]["code"] == "model_not_found"
        # Each as /predict would have answered it.
        alpha = await _feed(client, "ref", [0.1, 0.2], model="alpha")
        beta = await _feed(client, "ref", [0.5], model="beta")
        assert (results[2]["prediction"], results[1]["prediction"]) == (
            alpha["prediction"],
            beta["prediction"],
        )


@pytest.mark.slow
@pytest.mark.parametrize(("store", "history"), [("memory", 5), ("sqlite", 5), ("memory", 80)])
async def test_predict_many_replays_the_window_after_a_model_switch(
    store: str,
    history: int,
    models: SwitchableModels,
    other_models_dir: Path,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    """As /predict does; a window longer than the event loop may replay (80 values) is
    replayed again in a worker thread, with the same answer."""
    window = [round(0.01 * index, 2) for index in range(history)]
    settings = _settings(models.folder, tmp_path, store, request, session_history=history)
    async with asgi_client(settings) as client:
        fed = await client.post("/predict/batch", json={"session_id": "s", "values": window})
        assert fed.status_code == 200
        old = fed.json()["model_version"]
        models.point_at(_version(other_models_dir))
        await client.post("/models/reload")
        items = [
            {"session_id": "s", "value": 0.7, "step": history},
            {"session_id": "s", "value": 0.8},
            {"session_id": "other", "value": 0.1},
        ]
        response = await client.post("/predict/many", json={"items": items})
        assert response.status_code == 200, response.text
        first, second, other = response.json()["results"]
        assert first["previous_model_version"] == old and first["warmup_values"] == history
        assert second["previous_model_version"] is None and second["warmup_values"] is None
        assert (first["step"], second["step"], other["step"]) == (history + 1, history + 2, 1)
        fresh = await client.post(
            "/predict/batch", json={"session_id": "fresh", "values": [*window, 0.7, 0.8]}
        )
        assert fresh.json()["predictions"][-2:] == [first["prediction"], second["prediction"]]


def test_a_request_keeps_the_model_it_took_while_the_next_gets_the_new_one(
    models: SwitchableModels, other_models_dir: Path, tmp_path: Path
) -> None:
    """The swap is one assignment: what a request took at its start is never changed."""
    from app.forecaster import Forecaster
    from app.model_registry import ModelRegistry, ModelSlot
    from forecast_core.artifact import load_artifact

    def load_unchecked(path: Path, _tolerance: float) -> ModelSlot:  # no Keras: fast
        artifact = load_artifact(path)
        return ModelSlot(Forecaster(artifact.session_step(), artifact.manifest))

    settings = Settings(model_dir=models.folder, store="memory", data_dir=tmp_path)
    registry = ModelRegistry(settings, loader=load_unchecked)
    registry.refresh()
    in_flight = registry.get(None)
    old_forecaster, old_policy = in_flight.forecaster, in_flight.intervals
    models.point_at(_version(other_models_dir))
    (change,) = registry.refresh()
    assert change.version == _version(other_models_dir)
    assert in_flight.forecaster is old_forecaster and in_flight.intervals is old_policy
    assert registry.get("default").version == _version(other_models_dir)
    assert registry.refresh() == []  # nothing changed since
