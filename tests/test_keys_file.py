"""Scoped keys, and keys from a file that rotates without a restart."""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from asgi_lifespan import LifespanManager

from app.keys import KeyDefaults, parse_keys_file
from app.keys_file import KeysFileError, KeysFileWatcher
from app.main import create_app
from app.rate_limit import RateLimit, RateLimiter
from app.services import ModelSlot
from app.settings import Settings
from bench.local import RedisServer
from tests.helpers import Clock, Server, asgi_client, start_uvicorn, uvicorn_server

pytestmark = pytest.mark.anyio

CLIENT, OTHER, ADMIN = "client-key-0123456789", "other-key-9876543210", "admin-key-5555555555"
DEFAULTS = KeyDefaults(max_sessions=100, max_sessions_per_key=None, rate_limit=None)


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def keys_toml(*keys: str, admin: str | None = ADMIN) -> str:
    entries = [f'[[keys]]\nkey = "{key}"\n' for key in keys]
    if admin:
        entries.append(f'[[keys]]\nname = "ops"\nkey = "{admin}"\nscope = "admin"\n')
    return "\n".join(entries)


def write_atomically(path: Path, text: str) -> None:
    """As the README says to rotate: write beside the file, then rename over it."""
    staged = path.with_suffix(".new")
    staged.write_text(text)
    staged.replace(path)


# -- scopes ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/metrics", "/admin/sessions"])
async def test_a_client_key_on_an_admin_route_gets_403(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, path: str
) -> None:
    settings = Settings(
        model_dir=tutorial_models_dir, store="memory", api_keys=f"{CLIENT},admin:{ADMIN}"
    )
    async with asgi_client(settings, tutorial_model) as client:
        refused = await client.get(path, headers=auth(CLIENT))
        allowed = await client.get(path, headers=auth(ADMIN))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "forbidden"
    assert allowed.status_code == 200


async def test_an_admin_key_has_its_own_sessions_too(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory", api_keys=f"admin:{ADMIN}")
    async with asgi_client(settings, tutorial_model) as client:
        body = {"session_id": "mine", "value": 0.1}
        response = await client.post("/predict", json=body, headers=auth(ADMIN))
    assert response.status_code == 200


@pytest.mark.parametrize("path", ["/metrics", "/admin/sessions"])
async def test_open_mode_has_no_scopes(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, path: str
) -> None:
    async with asgi_client(
        Settings(model_dir=tutorial_models_dir, store="memory"), tutorial_model
    ) as client:
        assert (await client.get(path)).status_code == 200


# -- the file's format ----------------------------------------------------------------------------


def test_a_keys_file_sets_scopes_quotas_and_rates() -> None:
    digest = hashlib.sha256(OTHER.encode()).hexdigest()
    table = parse_keys_file(
        f'[[keys]]\nkey = "{CLIENT}"\nmax_sessions = 7\nrate_limit = "5/s burst 9"\n'
        f'[[keys]]\nsha256 = "{digest}"\nscope = "admin"\n',
        DEFAULTS,
    )
    client = table.by_digest[hashlib.sha256(CLIENT.encode()).hexdigest()]
    admin = table.by_digest[digest]
    assert (client.scope, client.max_sessions, client.rate_limit) == ("client", 7, RateLimit(5, 9))
    # Without overrides: the cap shared out between the two keys, and no rate.
    assert (admin.scope, admin.max_sessions, admin.rate_limit) == ("admin", 50, None)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[[keys]\n", "not valid TOML"),
        ("", "keys: Field required"),
        ('[[keys]]\nkey = "a"\nsha256 = "' + "0" * 64 + '"\n', "exactly one of 'key' and 'sha256'"),
        ('[[keys]]\nkey = "a"\nscope = "root"\n', "keys.0.scope"),
        ('[[keys]]\nkey = "a"\nrate_limit = "fast"\n', "200/s burst 400"),
        ('[[keys]]\nkey = "a"\ncolour = "red"\n', "keys.0.colour"),
        ('[[keys]]\nkey = "a"\n[[keys]]\nkey = "a"\n', "listed twice"),
    ],
    ids=["toml", "no-keys", "both-forms", "scope", "rate", "unknown-field", "duplicate"],
)
def test_a_bad_keys_file_is_refused_saying_what_to_fix(text: str, fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment) as refusal:
        parse_keys_file(text, DEFAULTS)
    assert "\n" not in str(refusal.value)


def test_keys_in_both_the_environment_and_a_file_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not both"):
        Settings(api_keys=CLIENT, api_keys_file=tmp_path / "keys.toml")


def test_a_bad_keys_file_at_start_up_stops_the_app_being_built(tmp_path: Path) -> None:
    path = tmp_path / "keys.toml"
    path.write_text('[[keys]]\nkey = "a"\nscope = "root"\n')
    with pytest.raises(KeysFileError, match=f"FORECAST_API_KEYS_FILE={path}: keys.0.scope"):
        create_app(Settings(store="memory", api_keys_file=path))


def test_a_server_with_a_bad_keys_file_exits_in_one_line(
    tutorial_models_dir: Path, tmp_path: Path
) -> None:
    path = tmp_path / "keys.toml"
    path.write_text("[[keys]\n")
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": "memory",
        "FORECAST_API_KEYS_FILE": str(path),
    }
    server = start_uvicorn(env, tmp_path / "server.log")
    code = server.process.wait(timeout=120)
    errors = [line for line in server.log_text().splitlines() if "ERROR" in line]
    assert code == 3  # uvicorn's start-up failure
    assert len(errors) == 1 and "not valid TOML" in errors[0]
    assert "Traceback" not in server.log_text()


# -- rotation -------------------------------------------------------------------------------------


@pytest.fixture
def keys_file(tmp_path: Path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(keys_toml(CLIENT, OTHER))
    return path


async def test_a_changed_file_is_taken_up_without_a_restart(
    tutorial_models_dir: Path, tutorial_model: ModelSlot, keys_file: Path
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory", api_keys_file=keys_file)
    app = create_app(settings, model=tutorial_model, clock=Clock())
    async with LifespanManager(app) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            before = await client.get("/model", headers=auth(OTHER))
            write_atomically(keys_file, keys_toml(CLIENT))
            # What the watcher does every FORECAST_API_KEYS_RELOAD_S, done now.
            assert await app.state.keys_watcher.check()
            after = await client.get("/model", headers=auth(OTHER))
            kept = await client.get("/model", headers=auth(CLIENT))
    assert (before.status_code, after.status_code, kept.status_code) == (200, 401, 200)


async def test_a_bad_rewrite_keeps_the_last_good_keys(
    keys_file: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from app.auth import ApiKeys
    from app.keys_file import load_keys_file

    loaded, table = load_keys_file(keys_file, DEFAULTS)
    api_keys = ApiKeys(table)
    watcher = KeysFileWatcher(keys_file, DEFAULTS, api_keys, RateLimiter(Clock()), loaded)
    write_atomically(keys_file, "[[keys]\n")
    with caplog.at_level(logging.ERROR, logger="app.keys"):
        changed = await watcher.check()
        await watcher.check()  # the same bad file again: not logged again
    assert not changed
    assert api_keys.entry_for(f"Bearer {OTHER}").scope == "client"
    messages = [record.getMessage() for record in caplog.records]
    assert len(messages) == 1 and "keeping the last good keys" in messages[0]


@pytest.fixture
def two_replicas(
    redis_server: RedisServer, tutorial_models_dir: Path, tmp_path: Path, keys_file: Path
) -> Iterator[list[Server]]:
    env = {
        "FORECAST_MODEL_DIR": str(tutorial_models_dir),
        "FORECAST_STORE": "redis",
        "FORECAST_REDIS_URL": redis_server.url,
        "FORECAST_REDIS_PREFIX": f"rotate-{tmp_path.name}",
        "FORECAST_API_KEYS_FILE": str(keys_file),
        "FORECAST_API_KEYS_RELOAD_S": "0.5",
    }
    with (
        uvicorn_server(env, tmp_path / "one.log", api_key=ADMIN) as one,
        uvicorn_server(env, tmp_path / "two.log", api_key=ADMIN) as two,
    ):
        yield [one, two]


def test_a_key_removed_from_the_file_stops_working_on_both_replicas(
    two_replicas: list[Server], keys_file: Path
) -> None:
    body = {"session_id": "kept", "value": 0.1}
    with httpx.Client(timeout=10) as http:
        before = [
            http.post(f"{server.base_url}/predict", json=body, headers=auth(OTHER)).status_code
            for server in two_replicas
        ]
        write_atomically(keys_file, keys_toml(CLIENT))
        refused: dict[str, float] = {}
        started = time.monotonic()
        # Polled until both refuse; the bound only stops a broken watcher from hanging the run.
        while len(refused) < 2 and time.monotonic() - started < 30:
            for server in two_replicas:
                if server.base_url in refused:
                    continue
                answer = http.get(f"{server.base_url}/model", headers=auth(OTHER))
                if answer.status_code == 401:
                    refused[server.base_url] = time.monotonic() - started
            time.sleep(0.05)
        still = http.get(f"{two_replicas[0].base_url}/model", headers=auth(CLIENT))
    print("seconds until each replica refused the removed key:", refused)
    assert before == [200, 200]
    assert len(refused) == 2
    assert still.status_code == 200
