"""Anytime-valid sequential tests on bounded paired differences (betting e-processes).

For ``x_t`` in [-1, 1] and ``H0: E[x_t | past] <= m``, the wealth of a fixed bet ``lambda`` is
``prod_t (1 + lambda (x_t - m))``: a non-negative supermartingale with mean <= 1 under H0
(``lambda`` is scaled by 1/(1+m) so no factor reaches 0). :class:`BettingTest` averages a grid
of bets (an average of e-processes is one), and Ville's inequality gives
``P(sup_t e_t >= 1/alpha) <= alpha``: valid at every stopping time, for events that need not be
identically distributed. :class:`RestartingTest` restarts one every ``block`` events to detect a
change that begins late, splitting alpha over the restarts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from schemas.errors import DriftError

BETS = tuple(0.5**k for k in range(1, 9))  # 0.5 .. 0.004: big bets for clear gains, small for faint ones


class SequentialTestError(DriftError):
    """A test configured outside its valid range."""


@dataclass
class BettingTest:
    """Anytime-valid one-sided test of ``H0: E[x_t | past] <= margin`` for ``x_t`` in [-1, 1].

    Rejects (``rejected``) once the e-value reaches ``1/alpha``; P(that ever happens under H0)
    <= alpha. State: the log-wealth of each bet, the count and the sum of the x's.
    """

    alpha: float
    margin: float = 0.0
    log_wealth: list[float] = field(default_factory=lambda: [0.0] * len(BETS))
    n: int = 0
    total: float = 0.0

    def __post_init__(self) -> None:
        if not -1.0 < self.margin < 1.0:
            raise SequentialTestError(f"betting test margin {self.margin} must be in (-1, 1)")

    def update(self, x: float) -> None:
        x = min(1.0, max(-1.0, float(x)))
        scale = 1.0 / (1.0 + self.margin)
        for j, bet in enumerate(BETS):
            self.log_wealth[j] += math.log1p(bet * scale * (x - self.margin))
        self.n += 1
        self.total += x

    @property
    def e_value(self) -> float:
        top = max(self.log_wealth)
        return math.exp(top) * sum(math.exp(w - top) for w in self.log_wealth) / len(self.log_wealth)

    @property
    def rejected(self) -> bool:
        return self.e_value >= 1.0 / self.alpha

    @property
    def threshold(self) -> float:
        return 1.0 / self.alpha

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0


@dataclass
class RestartingTest:
    """A harm detector over a window of ``horizon`` events: a fresh :class:`BettingTest` starts
    every ``block`` events, each at ``alpha / starts``, and it alarms when any of them rejects.

    One test from the window's start would let early good events hide a regression that begins
    later (their average stays within tolerance); the test started after the change sees only
    it. Union bound over the ``starts`` tests: P(false alarm in the window) <= ``alpha``.
    """

    alpha: float
    margin: float
    block: int
    horizon: int
    tests: list[BettingTest] = field(default_factory=list)
    n: int = 0
    total: float = 0.0

    @property
    def starts(self) -> int:
        return max(1, math.ceil(self.horizon / self.block))

    def update(self, x: float) -> None:
        if self.n % self.block == 0 and len(self.tests) < self.starts:
            self.tests.append(BettingTest(self.alpha / self.starts, self.margin))
        for t in self.tests:
            t.update(x)
        self.n += 1
        self.total += min(1.0, max(-1.0, float(x)))

    @property
    def e_value(self) -> float:
        return max((t.e_value for t in self.tests), default=1.0)

    @property
    def threshold(self) -> float:
        return self.starts / self.alpha

    @property
    def rejected(self) -> bool:
        return any(t.rejected for t in self.tests)

    @property
    def leader(self) -> BettingTest | None:
        """The restarted test with the most evidence (the one that alarms first)."""
        return max(self.tests, key=lambda t: t.e_value, default=None)

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n else 0.0
