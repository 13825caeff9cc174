"""One detector on one derived stream, with the recent values an alert explains itself by,
and its candidate/confirmation cycle (:mod:`streams.confirmation`).

A channel is fed one value at a time (:meth:`Channel.feed`) or, on the batch path, many at
once (:meth:`Channel.fast_forward`: the detector scans them in one call and the buffer is
written in slices) up to the first detection, which the caller then handles in event order
(:meth:`Channel.detected`). Both paths leave the same state.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

from streams.confirmation import (
    LLR_SHARE,
    MIN_CURRENT,
    CategoricalCandidate,
    NumericCandidate,
    change_point,
    holds,
    log_likelihood_ratios,
)
from streams.detectors import Detector
from streams.records import Finding, Position, RawPosition, summarize

BUFFER = 1024  # recent values kept per channel, for window summaries and provenance
MASK = BUFFER - 1  # BUFFER is a power of two


class Channel:
    """A numeric channel: a detection opens a :class:`NumericCandidate`, confirmed when the
    values since still show the shift; a rejected one rewinds the detector."""

    __slots__ = ("alert_type", "derived", "detector", "epoch", "name", "pending", "positions", "quiet_until",
                 "seen", "self_confirming", "values")  # fmt: skip

    def __init__(self, name: str, alert_type: str, detector: Detector, quiet_until: int):
        self.name, self.alert_type, self.detector = name, alert_type, detector
        self.self_confirming = detector.self_confirming  # e.g. a CUSUM: no blip check needed
        self.derived = detector.derived_signal  # it tests e.g. |x_t - x_{t-1}|, not x
        self.seen = 0
        # buffered values before this count are not comparable: before the last alert (the old
        # regime, already reported) or, for a derived signal, from its calibration (raw units)
        self.epoch = detector.signal_start
        self.quiet_until = quiet_until
        self.values: list[Any] = [0.0] * BUFFER
        self.positions: list[RawPosition | None] = [None] * BUFFER
        self.pending: NumericCandidate | CategoricalCandidate | None = None

    # ------------------------------------------------------------------ feeding
    def feed(self, x: Any, pos: RawPosition, confirm_events: int) -> Finding | None:
        det = self.detector
        fired = det.update(x)
        seen = self.seen
        i = seen & MASK
        self.values[i] = det.last_input if self.derived else x
        self.positions[i] = pos
        self.seen = seen + 1
        if fired:
            return self.detected(pos, confirm_events)
        if self.seen <= self.quiet_until:
            self.pending = None
        elif self.pending is not None and self.seen - self.pending.cut_seen >= confirm_events:
            return self._confirm(pos)
        return None

    def fast_forward(self, values: Sequence[Any], positions: Sequence[RawPosition], start: int) -> int:
        """Feed ``values[start:]`` (no candidate pending) until the detector fires; the index of
        that value (fed and buffered; call :meth:`detected` next), or ``len(values)``."""
        signal: list[float] | None = [] if self.derived else None
        k = self.detector.scan(values, start, signal)
        end = min(k + 1, len(values))
        self._store(signal if signal is not None else values[start:end], positions[start:end])
        return k

    def _store(self, values: Sequence[Any], positions: Sequence[RawPosition]) -> None:
        """Append to the ring buffers in at most two slice assignments per buffer."""
        n = len(values)
        seen = self.seen
        self.seen = seen + n
        if n > BUFFER:
            values, positions = values[n - BUFFER:], positions[n - BUFFER:]
            seen += n - BUFFER
            n = BUFFER
        i = seen & MASK
        head = min(n, BUFFER - i)
        self.values[i:i + head] = values[:head]
        self.positions[i:i + head] = positions[:head]
        if head < n:
            self.values[:n - head] = values[head:]
            self.positions[:n - head] = positions[head:]

    def detected(self, pos: RawPosition, confirm_events: int) -> Finding | None:
        """The detector fired on the latest value (already buffered)."""
        if self.seen <= self.quiet_until:
            self.pending = None
            return None
        if self.pending is not None:
            return self._confirm(pos) if self.seen - self.pending.cut_seen >= confirm_events else None
        return self._open(pos, confirm_events)

    def _recent(self, n: int) -> list[int]:
        n = min(n, self.seen, BUFFER)
        return [i % BUFFER for i in range(self.seen - n, self.seen)]

    # ------------------------------------------------------------------ candidates
    def _open(self, pos: RawPosition, confirm_events: int) -> Finding | None:
        """Split the buffered values where the shift is most significant: the change point.

        The detector's own window is no guide: after a cut ADWIN keeps hundreds of values
        from before the change, and a 'current' mean over them hid a doubled variance
        (measured: 1.77 against 1.76, so the shift's sign was noise and the check failed).
        """
        idx = self._recent(self.seen - self.epoch)
        vals = [self.values[i] for i in idx]
        n = len(vals)
        if n < 2:  # not even two comparable values to place the change
            return None
        if n < 2 * MIN_CURRENT:  # early (a small warm-up): the detector's own window splits
            n_cur = max(1, min(self.detector.window, n - 1))
        else:
            n_cur = change_point(vals)
        ref, cur = vals[:-n_cur], vals[-n_cur:]
        self.pending = NumericCandidate(self.seen, sum(ref) / len(ref), sum(cur) / len(cur), n_cur)
        if confirm_events == 0 or self.self_confirming:
            return self._confirm(pos)
        return None

    def _confirm(self, pos: RawPosition) -> Finding | None:
        c: NumericCandidate = self.pending  # type: ignore[assignment]
        self.pending = None
        after = self.seen - c.cut_seen
        post = [self.values[i] for i in self._recent(after)] if after else []
        shift = c.cur_mean - c.ref_mean
        idx = self._recent(self.seen - self.epoch)
        if not holds(post, c.ref_mean, shift, float):
            # a blip, or a real change the post values do not show yet: back to the old regime,
            # so it is cut again if it is real (the detector had adapted to it)
            self.detector.rewind([self.values[i] for i in idx[: max(len(idx) - after - c.n_cur, 0)]])
            return None
        n_window = min(c.n_cur + after, len(idx) - 1)
        ref_vals = [self.values[i] for i in idx[:-n_window]]
        cur_vals = [self.values[i] for i in idx[-n_window:]]
        ref, cur = summarize(ref_vals), summarize(cur_vals)
        diff = abs(cur["mean"] - ref["mean"])
        pooled_var = max((ref["std"] ** 2 + cur["std"] ** 2) / 2.0, 1e-12)
        threshold = self.detector.threshold(max(len(ref_vals), 1), len(cur_vals), pooled_var)
        se = math.sqrt(ref["std"] ** 2 / max(len(ref_vals), 1) + cur["std"] ** 2 / max(len(cur_vals), 1)) or 1e-12
        first = self.positions[idx[0]] or pos
        return Finding(
            statistic=diff,
            threshold=threshold if math.isfinite(threshold) else 0.0,
            confidence=math.erf(diff / se / math.sqrt(2.0)),
            effect=diff / math.sqrt(pooled_var),
            reference=ref,
            current=cur,
            first=Position(pos[0], pos[1], first[2], first[3]),
        )


class CategoricalChannel(Channel):
    """A categorical channel: the test's finding is kept as a :class:`CategoricalCandidate`
    and alerted when the mix stays changed; a rejected one restores the test's reference."""

    __slots__ = ()

    def _open(self, pos: RawPosition, confirm_events: int) -> Finding | None:
        finding = self._finding(pos)
        if confirm_events == 0:
            return finding
        d = self.detector.detection()
        top = finding.extra_params["category"]
        ref_share = finding.reference["mean"]
        llr = log_likelihood_ratios(d.current_mix, d.window, d.reference_mix, d.n_reference)
        # under the new mix the mean log-likelihood ratio is KL(new || old) > 0, under the old
        # one -KL(old || new) < 0
        kl = sum(p * llr.get(c, llr[None]) for c, p in d.current_mix.items())
        self.pending = CategoricalCandidate(self.seen, finding, top, ref_share, finding.current["mean"] - ref_share,
                                            llr, kl)
        return None

    def _confirm(self, pos: RawPosition) -> Finding | None:
        """The mix must stay changed after the test fired: its most moved category keeps at
        least half its move, or, for a change spread over many categories, the values since
        (and their latest half) are likelier under the new mix than under the old one. A
        burst that ended puts the test's old reference back (its window became the
        reference when it fired)."""
        c: CategoricalCandidate = self.pending  # type: ignore[assignment]
        self.pending = None
        post = [self.values[i] for i in self._recent(self.seen - c.cut_seen)]
        llr, top, unseen = c.llr, c.top, c.llr[None]
        # a share of the KL only: the fired window's mix is noisy
        if (holds(post, c.ref_share, c.shift, lambda v: 1.0 if str(v) == top else 0.0, share=0.5)
                or (c.kl > 0 and holds(post, 0.0, c.kl, lambda v: llr.get(v, unseen), share=LLR_SHARE))):
            return c.finding
        self.detector.restore_reference()
        return None

    def _finding(self, pos: RawPosition) -> Finding:
        det = self.detector.detection()
        ref_mix, cur_mix = det.reference_mix, det.current_mix
        idx = self._recent(det.window)
        first = (self.positions[idx[0]] if idx else None) or pos
        shifts = {c: cur_mix.get(c, 0.0) - ref_mix.get(c, 0.0) for c in set(ref_mix) | set(cur_mix)}
        top = max(shifts, key=lambda c: abs(shifts[c])) if shifts else ""
        tv = 0.5 * sum(abs(v) for v in shifts.values())
        return Finding(
            statistic=det.statistic,
            threshold=det.threshold,
            confidence=1.0 - det.p_value,
            effect=tv * 4,  # total variation 0.125 -> MEDIUM, 0.375 -> HIGH
            reference={"count": det.n_reference, "mean": ref_mix.get(top, 0.0), "std": 0.0,
                       "min": min(ref_mix.values(), default=0.0), "max": max(ref_mix.values(), default=0.0)},
            current={"count": det.window, "mean": cur_mix.get(top, 0.0), "std": 0.0,
                     "min": min(cur_mix.values(), default=0.0), "max": max(cur_mix.values(), default=0.0)},
            first=Position(pos[0], pos[1], first[2], first[3]),
            extra_params={
                "category": str(top),
                "reference_mix": json.dumps({str(k): round(v, 4) for k, v in sorted(ref_mix.items(), key=str)}),
                "current_mix": json.dumps({str(k): round(v, 4) for k, v in sorted(cur_mix.items(), key=str)}),
            },
        )


def new_channel(name: str, alert_type: str, detector: Detector, quiet_until: int) -> Channel:
    return (CategoricalChannel if detector.categorical else Channel)(name, alert_type, detector, quiet_until)
