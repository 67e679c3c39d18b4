"""The program bench.request_instructions counts: POST /predict (or /predict/many) in process,
no TensorFlow.

    PYTHONPATH=CHECKOUT python bench/instructions_target.py MODELS STORE DATA_DIR ROUNDS ITEMS
        [REDIS_URL PREFIX]

Run by its path with any checkout's ``app`` on PYTHONPATH (it imports nothing from ``bench``), so
that two versions of the service run the same requests. The app is built by its factory around
the default model loaded without the Keras check (TensorFlow's import would dwarf what is
counted); 64 sessions each take ``WARM_ROUNDS`` requests (their history windows filled) and then
``ROUNDS`` more, 64 requests in flight at a time, as wrk's connections keep them. With ``ITEMS``
above 0, a round is ``MANY_SESSIONS`` values instead, one per session, posted to /predict/many
``ITEMS`` a request, the requests of a round in flight together.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

SESSIONS = 64
WARM_ROUNDS = 300
# Sessions of a /predict/many round: enough for requests of 100 items to name 100 different
# ones; few enough that warming their windows stays minutes under valgrind.
MANY_SESSIONS = 200

Message = MutableMapping[str, Any]


class _NoTensorFlow:
    """Refuses TensorFlow and Keras, so that nothing in the counted run loads them by accident."""

    def find_spec(self, name: str, path: object = None, target: object = None) -> None:
        if name.split(".")[0] in ("tensorflow", "keras"):
            raise ImportError(f"{name} is not loaded in an instruction count")


async def _post(
    app: Callable[..., Awaitable[None]], state: dict[str, Any], body: bytes, path: str = "/predict"
) -> None:
    """POST ``body`` to ``path`` of ``app`` in process; SystemExit unless it answers 200."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
        "state": state.copy(),
    }
    received = False

    async def receive() -> Message:
        nonlocal received
        if received:
            return {"type": "http.disconnect"}
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    statuses: list[int] = []

    async def send(message: Message) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    await app(scope, receive, send)
    if statuses != [200]:
        raise SystemExit(f"{path} answered {statuses}")


def _bodies(items: int) -> list[tuple[bytes, str]]:
    """A round's request bodies and their path."""
    if items == 0:
        return [
            (json.dumps({"session_id": f"s{i}", "value": (i % 97) / 97}).encode(), "/predict")
            for i in range(SESSIONS)
        ]
    values = [{"session_id": f"s{i}", "value": (i % 97) / 97} for i in range(MANY_SESSIONS)]
    return [
        (json.dumps({"items": values[start : start + items]}).encode(), "/predict/many")
        for start in range(0, MANY_SESSIONS, items)
    ]


async def run(
    models: Path, store: str, data_dir: Path, rounds: int, items: int, redis: list[str]
) -> None:
    from asgi_lifespan import LifespanManager

    from app.forecaster import Forecaster
    from app.main import create_app
    from app.services import ModelSlot
    from app.settings import Settings
    from forecast_core.artifact import load_artifact

    try:
        from app.session_rows import compile_step_rows
    except ImportError:  # a checkout from before sessions were stepped in place
        pass
    else:
        # Compiled now, in both counted runs alike: the stores compile it in a thread of its
        # own, which under valgrind is still compiling (and counted) during the rounds.
        compile_step_rows()
    artifact = load_artifact((models / "latest").resolve())
    model = ModelSlot(forecaster=Forecaster(artifact.session_step(), artifact.manifest))
    fields: dict[str, Any] = {"model_dir": models, "store": store, "data_dir": data_dir}
    if items:
        fields["max_items_per_request"] = items
    if redis:
        fields |= {"redis_url": redis[0], "redis_prefix": redis[1]}
    app = create_app(Settings.model_validate(fields), model=model)
    bodies = _bodies(items)
    async with LifespanManager(app, startup_timeout=300) as manager:
        state = dict(getattr(manager, "_state", {}))
        for _round in range(WARM_ROUNDS + rounds):
            await asyncio.gather(*(_post(manager.app, state, body, path) for body, path in bodies))


def main() -> None:
    models, store, data_dir, rounds, items, *redis = sys.argv[1:]
    sys.meta_path.insert(0, _NoTensorFlow())
    asyncio.run(run(Path(models), store, Path(data_dir), int(rounds), int(items), redis))


if __name__ == "__main__":
    main()
