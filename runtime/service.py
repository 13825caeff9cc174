"""The one way a service process waits for its stop signal.

Every service's ``run(settings)`` is ``serve(name, lambda stop: Service(settings).run(stop))``:
SIGTERM and SIGINT set ``stop`` (the service finishes what it holds, commits and leaves its
group), a second signal is logged and ignored (a stop is already under way), and the
service's loop is ``while not stop.is_set(): step()``. ``driftctl run`` sends SIGTERM to stop
its children and restarts the ones that die (deploy/services.py).
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
from collections.abc import Callable
from typing import TypeVar

log = logging.getLogger(__name__)
T = TypeVar("T")
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def stop_on_signals(name: str, signals: tuple[signal.Signals, ...] = STOP_SIGNALS) -> threading.Event:
    """An Event set by the first of ``signals`` (main thread only, as Python requires)."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        if stop.is_set():
            log.info("%s: signal %d again; already stopping", name, signum)
            return
        log.info("%s: signal %d, stopping after the current step", name, signum)
        stop.set()

    for sig in signals:
        signal.signal(sig, on_signal)
    return stop


def tune_gc(young_threshold: int) -> None:
    """Collect the young generation every ``young_threshold`` net allocations (0: leave CPython's 700).

    A worker holds a whole batch alive at once (5,000 events are some 40,000 dicts and
    tuples): at 700 the cyclic collector runs dozens of times a batch, walks every live
    batch object and promotes it, and the older generations' walks then cover the detector
    state too. Reference counting frees nearly everything a batch made (our records hold no
    cycles), so a higher threshold only delays the collection of rare cycles. Measured on the
    streams worker fed from Kafka (5 slices x 2 features): 24,000-35,000 events/s at 700,
    39,000-53,000 at 50,000 (docs/benchmarks.md).
    """
    if young_threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(young_threshold, older, oldest)


def serve(name: str, run: Callable[[threading.Event], T]) -> T:
    """Wire the stop signals, then ``run(stop)`` until it returns (it must honour ``stop``)."""
    stop = stop_on_signals(name)
    result = run(stop)
    log.info("%s stopped", name)
    return result


def run_until_stopped(stop: threading.Event, step: Callable[[], object]) -> None:
    """The services' loop: one ``step()`` at a time until ``stop`` is set."""
    while not stop.is_set():
        step()
