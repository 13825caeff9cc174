"""Progress bars for long commands (produce, demo, train, bench): tqdm on stderr.

Shown only when stderr is a terminal, unless ``DRIFT_PROGRESS=on`` forces them (``off``
hides them), so logs and CI output stay clean. Use as a context manager:

    with progress(settings, total=n, desc="produce", unit="ev") as bar:
        for ...: bar.update(1)         # add
        bar.to(sent)                   # or set the absolute count (callbacks that report totals)
        bar.note(alerts=3)             # text after the bar

    produce_events(settings, events, progress=bar.to)   # any "count so far" callback
"""

from __future__ import annotations

import sys
from typing import IO, Any, Self

from tqdm import tqdm

from schemas.settings import Settings


def bars_enabled(mode: str, stream: IO[str]) -> bool:
    if mode == "on":
        return True
    if mode == "off":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


class Progress:
    """A tqdm bar, or nothing at all when disabled (same methods)."""

    def __init__(self, total: int | None, desc: str, unit: str, enabled: bool, stream: IO[str]):
        self.count = 0
        self._bar = (
            tqdm(total=total, desc=desc, unit=unit, unit_scale=bool(total and total >= 10_000), file=stream,
                 dynamic_ncols=True, leave=True)
            if enabled
            else None
        )

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def update(self, n: int = 1) -> None:
        self.count += n
        if self._bar is not None:
            self._bar.update(n)

    def to(self, count: int) -> None:
        """Move to an absolute count (never backwards)."""
        if count > self.count:
            self.update(count - self.count)

    def note(self, **fields: Any) -> None:
        if self._bar is not None:
            self._bar.set_postfix(fields, refresh=False)

    def write(self, text: str) -> None:
        """A line above the bar (plain print when there is no bar)."""
        if self._bar is not None:
            self._bar.write(text, file=self._bar.fp)
        else:
            print(text, file=sys.stderr)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress(
    settings: Settings | None = None,
    total: int | None = None,
    desc: str = "",
    unit: str = "it",
    *,
    mode: str | None = None,
    stream: IO[str] | None = None,
) -> Progress:
    """A progress bar for ``total`` units; ``mode`` (auto/on/off) overrides ``settings.progress``."""
    stream = stream if stream is not None else sys.stderr
    mode = mode or (settings.progress if settings is not None else "auto")
    return Progress(total, desc, unit, bars_enabled(mode, stream), stream)
