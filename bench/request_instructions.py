"""CPU instructions a POST /predict costs in process, counted by valgrind, side by side with
another checkout: a measure of the service's own work that the machine's noise moves less than
it moves the clock (on the memory store; on Redis hardly, see below).

    python -m bench.request_instructions [--stores memory,sqlite,redis] [--rounds 40]
        [--compare-with CHECKOUT] [--jobs 2] [--many-items 100]

``--many-items N``: the cost of one item of POST /predict/many instead, N items a request, each
another session (200 sessions, each given a value a round).

wrk's throughput on a shared machine moves by 10-20 % from one minute to the next, more than a
change to the request path often does. Instructions executed moved by about 1 % between runs of
one code on the memory store, but by up to 13 % on Redis, where the event loop's work while it
waits on Redis depends on timing (README, "Benchmarks"). Each target
(bench/instructions_target.py) runs under ``valgrind --tool=cachegrind`` twice, with and without
``--rounds`` more rounds of 64 requests, and the difference over those requests is the
cost of one /predict: the app's middleware, routing, body parsing, rules, model step and store
calls, garbage collection included. Left out: uvicorn's HTTP parsing and the socket (the same for
every version), the time a request waits (disk syncs, Redis's own work) and the cost of an
instruction (cache misses). So the ratios here are of the part a change to the service can move;
the throughput under load is bench.serve_throughput's.

Needs valgrind (``apt-get install valgrind``) and, for ``redis``, redis-server. A checkout that
has no ``models/`` gets the default model from its own training job.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from bench.instructions_target import MANY_SESSIONS, SESSIONS
from bench.local import RedisServer
from bench.serve_throughput import REPO, _ensure_model

TARGET = Path(__file__).with_name("instructions_target.py")
# Counted per round: /predict requests, or /predict/many items (one a session).
REQUESTS_PER_ROUND = SESSIONS
ITEMS_PER_ROUND = MANY_SESSIONS
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


@dataclass(frozen=True)
class Target:
    label: str
    checkout: Path
    models: Path
    store: str
    redis_url: str


def instructions(target: Target, rounds: int, items: int, workdir: Path) -> int:
    """Instructions of one run of the target program with ``rounds`` counted rounds (of
    /predict/many requests of ``items`` items, or of /predict requests for 0)."""
    run_dir = workdir / f"{target.label}-{target.store}-{rounds}".replace("/", "_")
    command = [
        "valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
        sys.executable, str(TARGET), str(target.models), target.store, str(run_dir), str(rounds),
        str(items),
    ]  # fmt: skip
    if target.store == "redis":
        command += [target.redis_url, f"{run_dir.name}"]
    env = {**os.environ, "PYTHONPATH": str(target.checkout)}
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    found = _TOTAL.search(done.stderr)
    if done.returncode != 0 or found is None:
        tail = done.stderr.strip().splitlines()[-5:]
        raise SystemExit(f"bench: {target.label} ({target.store}) failed: {' | '.join(tail)}")
    return int(found.group(1).replace(",", ""))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--stores", default="memory,sqlite,redis", help="comma list")
    parser.add_argument(
        "--rounds", type=int, default=40, help="counted rounds of 64 requests (after 300 warm)"
    )
    parser.add_argument("--compare-with", type=Path, default=None, metavar="CHECKOUT")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    parser.add_argument(
        "--many-items", type=int, default=0, help="count a /predict/many item, N a request"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        sys.exit("bench: valgrind is not installed (apt-get install valgrind)")
    stores = [s.strip() for s in args.stores.split(",") if s.strip()]
    with tempfile.TemporaryDirectory(prefix="bench-instr-") as tmp:
        workdir = Path(tmp)
        checkouts = [("this", REPO)]
        if args.compare_with is not None:
            checkouts.append((args.compare_with.name, args.compare_with.resolve()))
        redis = RedisServer(workdir, durable=False) if "redis" in stores else None
        if redis is not None:
            redis.start()
        redis_url = redis.url if redis is not None else ""
        try:
            targets: list[Target] = []
            for label, checkout in checkouts:
                models = _ensure_model(workdir, checkout)  # trains when the checkout has none
                targets += [Target(label, checkout, models, store, redis_url) for store in stores]
            # Every run submitted before any is awaited, so that --jobs runs them side by side.
            with ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
                runs = {
                    (target.label, target.store, rounds): pool.submit(
                        instructions, target, rounds, args.many_items, workdir
                    )
                    for target in targets
                    for rounds in (0, args.rounds)
                }
                counts = {
                    (target.label, target.store): (
                        runs[(target.label, target.store, args.rounds)].result()
                        - runs[(target.label, target.store, 0)].result()
                    )
                    / (args.rounds * (ITEMS_PER_ROUND if args.many_items else REQUESTS_PER_ROUND))
                    for target in targets
                }
        finally:
            if redis is not None:
                redis.stop()
    if args.many_items:
        print(
            f"instructions per /predict/many item in process (valgrind), {args.many_items} "
            f"items a request over {ITEMS_PER_ROUND} sessions, {args.rounds} counted rounds "
            "after 300"
        )
    else:
        print(
            f"instructions per POST /predict in process (valgrind), {REQUESTS_PER_ROUND} "
            f"sessions in flight, {args.rounds} counted rounds after 300"
        )
    header = f"{'store':<10}" + "".join(f"{label:>14}" for label, _ in checkouts)
    print(header + (f"{'this/other':>12}" if len(checkouts) > 1 else ""))
    for store in stores:
        row = [counts[(label, store)] for label, _ in checkouts]
        line = f"{store:<10}" + "".join(f"{count:>14,.0f}" for count in row)
        if len(row) > 1:
            line += f"{row[0] / row[1]:>12.3f}"
        print(line)


if __name__ == "__main__":
    main()
