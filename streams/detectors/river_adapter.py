"""The one place that touches river's private ADWIN parts.

river's ``ADWIN.update`` is a Python wrapper (reset after a detection, then the Rust
``AdaptiveWindowing`` helper) around a call that takes a fraction of the time; on the hot
path the wrapper is most of the cost. :class:`AdwinWindow` does exactly what the wrapper
does, on ``_helper``, ``_drift_detected`` and ``_reset``, and
``tests/unit/test_river_adapter.py`` checks it against river's public ``ADWIN.update`` on
the same values, so a river upgrade that changes those parts fails a test instead of
changing detections.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from river import drift


class AdwinWindow:
    """river's ADWIN window, fed one value (:meth:`update`) or many (:meth:`scan`) at a time."""

    __slots__ = ("adwin",)

    def __init__(self, delta: float, clock: int, grace_period: int):
        self.adwin = drift.ADWIN(delta=delta, clock=clock, grace_period=grace_period)

    def update(self, z: float) -> bool:
        """river's ``ADWIN.update`` then ``drift_detected``: after a detection the window restarts."""
        a = self.adwin
        if a._drift_detected:
            a._reset()
        a._drift_detected = fired = a._helper.update(z)
        return fired

    def scan(self, zs: Sequence[float], start: int = 0) -> int:
        """:meth:`update` on ``zs[start:]`` until a detection; its index, or ``len(zs)``."""
        a = self.adwin
        if a._drift_detected:
            a._reset()
            a._drift_detected = False
        helper = a._helper.update
        for i in range(start, len(zs)):
            if helper(zs[i]):
                a._drift_detected = True
                return i
        return len(zs)

    def load(self, zs: Iterable[float]) -> None:
        """Start a fresh window holding ``zs``, with no detection pending (a rewind)."""
        a = self.adwin = drift.ADWIN(delta=self.adwin.delta, clock=self.adwin.clock,
                                     grace_period=self.adwin.grace_period)
        helper = a._helper.update
        for z in zs:
            helper(z)
        a._drift_detected = False

    @property
    def width(self) -> int:
        return int(self.adwin.width)
