"""The garbage collector's settings while serving: one definition for the service's lifespan
(and for bench.floor_app, which must be served as the service is)."""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

# Net new container objects between two young-generation collections while serving (CPython's
# default is 700). Requests in flight hold a few hundred objects each and free them by reference
# counting, so at the default the collector ran every few requests only to walk the objects of
# the requests still in flight; cyclic garbage waits at most this many allocations.
SERVING_YOUNG_GC_THRESHOLD = 20_000


@contextlib.contextmanager
def collector_tuned_for_serving() -> Iterator[None]:
    """Everything loaded so far frozen and a longer young generation, until the block ends."""
    # What lives until shutdown, frozen: the collector no longer re-scans TensorFlow's object
    # graph, which showed as long pauses at p99.
    gc.collect()
    gc.freeze()
    thresholds = gc.get_threshold()
    gc.set_threshold(SERVING_YOUNG_GC_THRESHOLD, *thresholds[1:])
    try:
        yield
    finally:
        gc.set_threshold(*thresholds)
        gc.unfreeze()
