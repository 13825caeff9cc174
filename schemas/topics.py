"""The pipeline's topic names, derived from one configurable prefix."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str = "drift"

    @property
    def events(self) -> str:
        return f"{self.prefix}.events"

    @property
    def dlq(self) -> str:
        return f"{self.prefix}.events.dlq"

    @property
    def stats(self) -> str:
        return f"{self.prefix}.stats"

    @property
    def alerts(self) -> str:
        return f"{self.prefix}.alerts"

    @property
    def retrain_requests(self) -> str:
        return f"{self.prefix}.retrain.requests"

    @property
    def retrain_results(self) -> str:
        return f"{self.prefix}.retrain.results"

    @property
    def models(self) -> str:
        """Compacted: the latest ModelUpdate per model (serving handles follow it)."""
        return f"{self.prefix}.models"

    def all(self) -> list[str]:
        return [self.events, self.dlq, self.stats, self.alerts, self.retrain_requests, self.retrain_results,
                self.models]
