"""Per-key rate limits: a key over its rate gets 429 with Retry-After; others pass (fake clock)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.errors import RateLimited
from app.rate_limit import RateLimit, RateLimiter, parse_rate_limit
from app.replica_peers import ReplicaPeers
from app.services import ModelSlot
from app.settings import Settings
from bench.local import RedisServer
from tests.helpers import Clock, asgi_client

pytestmark = pytest.mark.anyio

ALICE, BOB, ADMIN = "alice-key-0123456789", "bob-key-9876543210", "admin-key-5555555555"


def auth(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def limited(models: Path, rate: str = "2/s burst 2") -> Settings:
    return Settings(
        model_dir=models, store="memory", api_keys=f"{ALICE},{BOB},admin:{ADMIN}", rate_limit=rate
    )


async def predict(client: httpx.AsyncClient, key: str, session_id: str = "s") -> httpx.Response:
    body = {"session_id": session_id, "value": 0.1}
    return await client.post("/predict", json=body, headers=auth(key))


async def test_a_key_over_its_rate_gets_429_with_retry_after(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    clock = Clock()
    async with asgi_client(limited(tutorial_models_dir), tutorial_model, clock) as client:
        admitted = [(await predict(client, ALICE)).status_code for _ in range(2)]
        refused = await predict(client, ALICE)
    assert admitted == [200, 200]
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limited"
    assert refused.headers["retry-after"] == "1"


async def test_another_key_passes_while_one_is_limited(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    clock = Clock()
    async with asgi_client(limited(tutorial_models_dir), tutorial_model, clock) as client:
        for _ in range(3):
            await predict(client, ALICE)
        bob = [(await predict(client, BOB)).status_code for _ in range(2)]
    assert bob == [200, 200]


async def test_the_bucket_refills_with_time(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    clock = Clock()
    async with asgi_client(limited(tutorial_models_dir), tutorial_model, clock) as client:
        for _ in range(3):
            await predict(client, ALICE)
        clock.advance(0.5)  # 2/s: one token back
        again = await predict(client, ALICE)
    assert again.status_code == 200


async def test_a_batch_counts_each_of_its_values(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    clock = Clock()
    async with asgi_client(limited(tutorial_models_dir), tutorial_model, clock) as client:
        body = {"session_id": "b", "values": [0.1, 0.2, 0.3, 0.4]}
        batch = await client.post("/predict/batch", json=body, headers=auth(ALICE))
        clock.advance(0.5)  # one token back: not enough, the batch left the bucket in debt
        after = await predict(client, ALICE)
    assert batch.status_code == 200  # admitted on one token; its other values are owed
    assert after.status_code == 429
    assert after.headers["retry-after"] == "1"


async def test_open_mode_has_no_rate_limit_by_default(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    settings = Settings(model_dir=tutorial_models_dir, store="memory")
    async with asgi_client(settings, tutorial_model, Clock()) as client:
        statuses = {
            (await client.post("/predict", json={"session_id": "o", "value": 0.1})).status_code
            for _ in range(20)
        }
    assert statuses == {200}


async def test_refusals_are_counted_by_reason_not_by_key(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    clock = Clock()
    async with asgi_client(
        limited(tutorial_models_dir, "100/s burst 3"), tutorial_model, clock
    ) as client:
        for _ in range(4):
            await predict(client, ALICE)
        await client.get("/model", headers=auth("not-a-key"))
        await client.get("/metrics", headers=auth(BOB))
        metrics = (await client.get("/metrics", headers=auth(ADMIN))).text
    assert 'forecast_limit_refusals_total{reason="rate_limit"} 1.0' in metrics
    assert 'forecast_auth_failures_total{reason="unknown_key"} 1.0' in metrics
    assert 'forecast_auth_failures_total{reason="client_key_on_admin_route"} 1.0' in metrics
    assert ALICE not in metrics and "namespace" not in metrics


def test_refusals_are_logged_at_most_once_per_interval(caplog: pytest.LogCaptureFixture) -> None:
    from app.audit import Audit

    clock = Clock()
    audit = Audit(clock, interval_s=10)
    with caplog.at_level("WARNING", logger="app.audit"):
        for _ in range(100):
            audit.refused(RateLimited(1), "/predict")
        clock.advance(10)
        audit.refused(RateLimited(1), "/predict")
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 2
    assert "99 more since the last line" in lines[1]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("200/s burst 400", RateLimit(200, 400)),
        ("200/s", RateLimit(200, 200)),
        ("0.5/s", RateLimit(0.5, 1)),
        ("off", None),
        ("", None),
    ],
)
def test_rate_limits_are_written_as_requests_per_second_and_a_burst(
    text: str, expected: RateLimit | None
) -> None:
    assert parse_rate_limit(text) == expected


@pytest.mark.parametrize("text", ["200", "200/m", "fast", "0/s", "200/s burst"])
def test_a_malformed_rate_limit_is_refused_with_the_syntax(text: str) -> None:
    with pytest.raises(ValueError, match="FORECAST_RATE_LIMIT"):
        parse_rate_limit(text)


def test_each_replica_refills_at_its_share_of_the_rate() -> None:
    clock = Clock()
    limiter = RateLimiter(clock)
    limiter.set_replicas(2)
    bucket = limiter.bucket("k1", RateLimit(10, 10))
    admitted = 0
    for _ in range(20):
        try:
            bucket.take()
            admitted += 1
        except RateLimited:
            break
    assert admitted == 5  # half the burst on each of two replicas


async def test_replicas_sharing_redis_count_each_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    limiters = [RateLimiter(Clock()), RateLimiter(Clock())]
    peers = [ReplicaPeers(redis_server.url, f"peers-{tmp_path.name}", lim, 1.0) for lim in limiters]
    try:
        for peer in peers:
            await peer.beat()
        await peers[0].beat()  # the first now sees the second too
    finally:
        await peers[1].close()
    assert (limiters[0].replicas, limiters[1].replicas) == (2, 2)
    assert await peers[0].beat() == 1  # the second left the count when it stopped
    await peers[0].close()


async def test_the_python_client_raises_too_many_requests_with_the_wait(
    tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    from forecast_client.errors import TooManyRequests, refusal

    async with asgi_client(limited(tutorial_models_dir), tutorial_model, Clock()) as client:
        for _ in range(2):
            await predict(client, ALICE)
        refused = await predict(client, ALICE)
    error = refusal(refused.status_code, refused.json())
    assert isinstance(error, TooManyRequests)
    assert error.retry_after_s == 1
