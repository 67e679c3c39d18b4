"""bench.many_latency counts an asyncio client's latencies as wrk counts its own."""

from __future__ import annotations

from bench.many_latency import as_wrk_counts


def test_a_slow_request_adds_one_sample_an_interval_shorter_down_to_two_intervals() -> None:
    # One connection, 4 requests in 2 s: an interval of 0.5 s.
    counted = as_wrk_counts([0.5, 0.5, 0.5, 5.0], connections=1, elapsed_s=2.0)

    assert counted == [0.5, 0.5, 0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0]


def test_latencies_under_two_intervals_are_counted_as_they_are() -> None:
    assert as_wrk_counts([0.9, 0.5, 0.6, 0.7], connections=1, elapsed_s=2.0) == [0.5, 0.6, 0.7, 0.9]
