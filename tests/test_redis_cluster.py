"""The session store on a real Redis Cluster: recognised by asking, one slot per session, the
per-shard cap, revisions that never come back, and replica confirmation."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import pytest
import redis

from app.forecaster import Forecaster
from app.intervals import IntervalPolicy
from app.services import ModelSlot
from app.session_rules import fresh_record
from app.settings import Settings
from app.stores.factory import open_store
from app.stores.redis_cluster import RedisClusterStore
from bench.local import RedisCluster
from tests.helpers import asgi_client

pytestmark = pytest.mark.anyio


def cluster_settings(cluster: RedisCluster, models: Path, **overrides: object) -> Settings:
    return Settings.model_validate(
        {"model_dir": models, "store": "redis", "redis_url": cluster.url, **overrides}
    )


async def test_the_service_recognises_a_cluster_and_says_so(
    empty_redis_cluster: RedisCluster, tutorial_models_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = cluster_settings(empty_redis_cluster, tutorial_models_dir)
    with caplog.at_level(logging.INFO, logger="app.stores.redis_mode"):
        store = await open_store(settings, clock=lambda: 0.0)
    await store.close()
    assert isinstance(store, RedisClusterStore)
    assert "session store: Redis Cluster at redis://127.0.0.1:" in caplog.text


async def test_writes_spread_over_every_master(
    empty_redis_cluster: RedisCluster, tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    before = empty_redis_cluster.command_counts("evalsha")
    settings = cluster_settings(empty_redis_cluster, tutorial_models_dir)
    async with asgi_client(settings, tutorial_model) as client:
        for index in range(60):
            body = {"session_id": f"spread-{index}", "value": 0.5}
            assert (await client.post("/predict", json=body)).status_code == 200
    after = empty_redis_cluster.command_counts("evalsha")
    writes = {port: after[port] - before.get(port, 0) for port in after}
    masters = {node.port for node in empty_redis_cluster.masters()}
    print("EVALSHA per master:", {port: writes[port] for port in sorted(masters)})
    assert all(writes[port] > 0 for port in masters)
    assert max(writes.values()) < sum(writes.values())


async def test_a_full_shard_refuses_new_sessions_and_keeps_serving_its_own(
    empty_redis_cluster: RedisCluster, tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    # 6 sessions over 3 masters: each master admits ceil(6 / 3) = 2.
    settings = cluster_settings(empty_redis_cluster, tutorial_models_dir, max_sessions=6)
    async with asgi_client(settings, tutorial_model) as client:
        statuses = []
        for index in range(12):
            body = {"session_id": f"cap-{index}", "value": 0.1}
            statuses.append((await client.post("/predict", json=body)).status_code)
        refused = await client.post("/predict", json={"session_id": "cap-late", "value": 0.1})
        admitted = [f"cap-{i}" for i, status in enumerate(statuses) if status == 200]
        again = await client.post("/predict", json={"session_id": admitted[0], "value": 0.2})
    assert sorted(set(statuses)) == [200, 503]
    assert len(admitted) == 6  # two per shard: the shards fill up evenly, then nothing more
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "session_limit_reached"
    assert again.status_code == 200 and again.json()["step"] == 2


async def test_a_recreated_session_never_takes_a_stale_write(
    empty_redis_cluster: RedisCluster, forecaster: Forecaster, policy: IntervalPolicy
) -> None:
    store = RedisClusterStore(empty_redis_cluster.url, prefix="cas", ttl_s=60, max_sessions=100)
    try:
        record = fresh_record(forecaster, policy, now=1.0)
        assert (await store.write_if_unchanged("s", None, record))[0]
        stale = await store.read("s")
        assert stale is not None
        await store.delete("s")
        assert (await store.write_if_unchanged("s", None, record))[0]  # recreated
        written, current = await store.write_if_unchanged("s", stale, record._replace(step=9))
    finally:
        await store.close()
    assert not written
    assert current is not None and current.step == 0 and current.revision != stale.revision


async def test_session_keys_carry_the_session_as_their_hash_tag(
    empty_redis_cluster: RedisCluster, tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    settings = cluster_settings(empty_redis_cluster, tutorial_models_dir)
    async with asgi_client(settings, tutorial_model) as client:
        await client.post("/predict", json={"session_id": "tagged", "value": 0.1})
    raw = redis.RedisCluster(host="127.0.0.1", port=empty_redis_cluster.nodes[0].port)
    try:
        keys = [key.decode() for key in raw.scan_iter(match="*", target_nodes=raw.ALL_NODES)]
    finally:
        raw.close()
    # The session's hash and its window's ring: one slot.
    assert set(keys) == {"forecast:s:{public/tagged}", "forecast:w:{public/tagged}"}


async def test_an_unconfirmed_step_is_503_and_its_retry_replays_once_confirmed(
    empty_redis_cluster: RedisCluster, tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    # Each master has one replica: asking for two can never be confirmed.
    strict = cluster_settings(
        empty_redis_cluster, tutorial_models_dir, redis_min_replicas=2, redis_wait_timeout_ms=50
    )
    body = {"session_id": "confirm", "value": 0.3, "step": 0}
    async with asgi_client(strict, tutorial_model) as client:
        unconfirmed = await client.post("/predict", json=body)
    one = cluster_settings(empty_redis_cluster, tutorial_models_dir, redis_min_replicas=1)
    async with asgi_client(one, tutorial_model) as client:
        retried = await client.post("/predict", json=body)
        following = await client.post(
            "/predict", json={"session_id": "confirm", "value": 0.4, "step": 1}
        )
    assert unconfirmed.status_code == 503
    message = unconfirmed.json()["error"]["message"]
    assert "1 of 2 replicas confirmed the write within 50 ms" in message
    assert "retry the same request (same step)" in message
    assert retried.status_code == 200, retried.text
    assert retried.json()["replayed"] is True, retried.text
    assert retried.json()["replayed"] is True and retried.json()["step"] == 1
    assert following.status_code == 200 and following.json()["step"] == 2


async def test_the_session_cap_is_per_shard_rounded_up(
    empty_redis_cluster: RedisCluster,
) -> None:
    store = RedisClusterStore(empty_redis_cluster.url, prefix="c", ttl_s=60, max_sessions=10)
    try:
        await store.ping()
        assert store._shard_cap() == math.ceil(10 / 3)
    finally:
        await store.close()


def test_a_prefix_with_braces_is_refused(tutorial_models_dir: Path) -> None:
    with pytest.raises(ValueError, match="redis_prefix"):
        Settings(model_dir=tutorial_models_dir, redis_prefix="a{b}")


async def test_no_replicas_confirm_nothing_on_a_single_node(
    redis_server: object, tutorial_models_dir: Path, tutorial_model: ModelSlot, tmp_path: Path
) -> None:
    settings = Settings.model_validate(
        {
            "model_dir": tutorial_models_dir,
            "store": "redis",
            "redis_url": redis_server.url,  # type: ignore[attr-defined]
            "redis_prefix": f"wait-{tmp_path.name}",
            "redis_min_replicas": 1,
            "redis_wait_timeout_ms": 20,
        }
    )
    async with asgi_client(settings, tutorial_model) as client:
        response = await client.post("/predict", json={"session_id": "w", "value": 0.1})
    assert response.status_code == 503
    assert "0 of 1 replicas confirmed" in response.json()["error"]["message"]


async def test_a_delete_is_confirmed_like_a_step(
    empty_redis_cluster: RedisCluster, tutorial_models_dir: Path, tutorial_model: ModelSlot
) -> None:
    plain = cluster_settings(empty_redis_cluster, tutorial_models_dir)
    async with asgi_client(plain, tutorial_model) as client:
        await client.post("/predict", json={"session_id": "gone", "value": 0.1})
    strict = cluster_settings(
        empty_redis_cluster, tutorial_models_dir, redis_min_replicas=2, redis_wait_timeout_ms=50
    )
    async with asgi_client(strict, tutorial_model) as client:
        unconfirmed = await client.delete("/sessions/gone")
        again = await client.delete("/sessions/gone")  # deleted on the master: nothing to confirm
    assert unconfirmed.status_code == 503
    assert again.json() == {"session_id": "gone", "deleted": False}
