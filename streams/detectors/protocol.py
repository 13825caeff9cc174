"""What a detector is: everything :class:`streams.channel.Channel` calls, stated once.

A detector is a small river-style state machine over one derived stream: ``update(x)``
returns whether a change was detected, the rest is read-only state. No Kafka, clock or
config reads inside. Per (slice, feature) detectors are ``clone()``s of one prototype.

To add one: subclass :class:`Detector` (or :class:`CategoricalDetector`), give it a
``key``, and register the class in :mod:`streams.detectors.registry`.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar


class Detector:
    """The protocol, with the defaults most detectors want.

    Class flags tell the channel how to treat the detector (no attribute probes there):

    - ``self_confirming``: a detection is its own persistence check (a CUSUM), so the
      channel alerts at once instead of waiting ``confirm_events`` values;
    - ``derived_signal``: the detector tests a transform of the input (e.g. successive
      differences), and ``last_input`` is that signal, not ``x``;
    - ``categorical``: the values are categories; see :class:`CategoricalDetector`.
    """

    __slots__ = ()
    key: ClassVar[str] = ""
    self_confirming: ClassVar[bool] = False
    derived_signal: ClassVar[bool] = False
    categorical: ClassVar[bool] = False

    last_input: float = 0.0  # the signal the detector saw for the latest value, in input units

    def update(self, x: Any) -> bool:
        raise NotImplementedError

    def scan(self, values: Sequence[Any], start: int, signal: list[float] | None = None) -> int:
        """Feed ``values[start:]`` until one is detected; return its index, or ``len(values)``.

        The same as calling :meth:`update` on each value (detectors override it with a tight
        loop: the batch path feeds a detector all its values of a batch in one call). With
        ``signal`` (a derived-signal detector), each fed value's ``last_input`` is appended.
        """
        update = self.update
        n = len(values)
        for i in range(start, n):
            fired = update(values[i])
            if signal is not None:
                signal.append(self.last_input)
            if fired:
                return i
        return n

    def clone(self) -> Detector:
        raise NotImplementedError

    @property
    def params(self) -> dict[str, str]:
        """The configuration, for the alert record."""
        raise NotImplementedError

    @property
    def detection_params(self) -> dict[str, str]:
        """What the latest detection tested, beyond :attr:`params` (e.g. the rates a CUSUM compared)."""
        return {}

    @property
    def window(self) -> int:
        """How many of the latest values make the post-change ("current") window."""
        raise NotImplementedError

    @property
    def signal_start(self) -> int:
        """Values before this count are not comparable with later signal values (a derived
        signal's calibration values are in raw units): the channel's first epoch."""
        return 0

    def threshold(self, n_ref: int, n_cur: int, variance: float) -> float:
        """The shift this detector needs, in input units, between windows of ``n_ref`` and
        ``n_cur`` values with ``variance``: the alert's ``threshold``."""
        return 0.0

    def rewind(self, reference: list[float]) -> None:
        """A candidate did not hold: start again from ``reference`` (the values before the
        change point, in ``last_input`` units), so a real change is cut and tested again.
        Detectors with nothing to rewind ignore it."""


@dataclass(frozen=True, slots=True)
class CategoricalDetection:
    """What a categorical test saw when it fired: the alert and its confirmation are built from it."""

    statistic: float
    threshold: float
    p_value: float
    reference_mix: dict[Hashable, float]
    current_mix: dict[Hashable, float]
    n_reference: int
    window: int


class CategoricalDetector(Detector):
    """A detector on categories: it reports its latest detection's mixes, and can take back
    the reference change a detection made when the change turns out not to hold."""

    __slots__ = ()
    categorical: ClassVar[bool] = True

    def detection(self) -> CategoricalDetection:
        raise NotImplementedError

    def restore_reference(self) -> None:
        """Undo the latest detection's rebase: the change did not hold (a burst)."""


def wilson_upper(ones: int, n: int, z: float) -> float:
    """Upper end of the ``z``-sigma Wilson score interval of a rate ``ones / n`` (n > 0): a
    reference rate taken there does not cause alarms for being unluckily low."""
    p = ones / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre + half
