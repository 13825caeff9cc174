"""A user's serving application, for test_serving_handle: its own process, a ModelHandle,
one event at a time produced with the version that made it, until its stdin closes.

Labels follow a concept the test can switch with a line on stdin (``concept A`` / ``concept
B``): A labels an event 1 when ``x >= 3``, B the opposite on slice ``a`` (slice ``b`` keeps A).
Output lines (flushed): ``ready <version>``, ``swap <served> <current> <candidate|->`` when
what serves changed (``served``: events served before the swap was seen), and at the end
``done <served> <delivered> <failed>``. Settings come from the DRIFT_* environment.
"""

from __future__ import annotations

import logging
import select
import sys
import time

from retrain_jobs.serving import ModelHandle
from schemas.settings import load_settings


def event(model: str, i: int, concept: str = "A") -> dict:
    slice_ = "ab"[i % 2]
    x = float(i % 7)
    label = int(x >= 3) if concept == "A" or slice_ == "b" else int(x < 3)
    return {"event_id": f"{model}-{i:06d}", "event_time": 1_790_000_000_000 + i, "model": model, "slice": slice_,
            "features": {"x": x, "y": float(i % 50)}, "categorical": {"c": "uv"[i % 3 == 0]},
            "label": label}  # fmt: skip


def main(model: str, pause: float) -> None:
    logging.basicConfig(level=logging.INFO, format="app %(asctime)s %(levelname)s %(name)s %(message)s")
    served, concept = 0, "A"

    def on_swap(current: str, candidate: str | None) -> None:
        print(f"swap {served} {current} {candidate or '-'}", flush=True)

    with ModelHandle(load_settings(), model, on_swap=on_swap) as handle:
        handle.wait_ready(60)
        print(f"ready {handle.current_version}", flush=True)
        while True:
            if select.select([sys.stdin], [], [], 0)[0]:
                line = sys.stdin.readline()
                if not line:
                    break  # stdin closed: the test is done with us
                if line.startswith("concept "):
                    concept = line.split()[1]
            handle.serve(event(model, served, concept))
            served += 1
            time.sleep(pause)
        handle.flush(30)
        print(f"done {served} {handle.stats.produced} {handle.stats.produce_failures}", flush=True)


if __name__ == "__main__":
    main(sys.argv[1], float(sys.argv[2]))
