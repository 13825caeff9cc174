"""A batch of Avro events decoded straight into columns, for the streams worker's hot path.

Decoding one event into a dict (cavro: 5 us) and sorting a batch's dicts back into per-slice,
per-feature columns for the detectors (another 4 us) were two thirds of a worker's time
outside its detectors. No library decodes our schema into columns (polars-avro and jetliner
refuse the label's three-way union), so this module reads the batch's bodies in one
numba-compiled pass into arrays (0.5 us an event), and :class:`EventColumns` hands out each
slice's columns as the lists the monitor's channels take.

It is a fast path, never a judge: :func:`decode_columns` returns None unless every event of
the batch is one it reads exactly as fastavro would and within the event limits, and the
caller then decodes the batch event by event (schemas.events.decode_events), where the
verdicts and dead-letter reasons come from. What it takes: current-schema single-object
events, each small enough not to break a length limit (``EventLimits.unbreakable_size``),
ASCII strings, one block per map, no repeated map key, varints of at most 10 bytes within 64
bits, nothing left over after the record, non-empty model and slice, numbers within
``max_abs_value``, and the same numeric and categorical feature names in the same order in
every event (a fixed feature set, the usual stream). Strings are matched by a 64-bit hash
and then compared byte for byte, so a collision sends the batch to the slow path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

import numpy as np
from numba import njit

from schemas.codec import EVENT, HEADER_LEN

_FNV_OFFSET, _FNV_PRIME = np.uint64(14695981039346656037), np.uint64(1099511628211)


@njit(cache=True, inline="always")
def _long(buf, i, end):
    """A zig-zag varint at ``i``: (value, next index, ok); ok only for 64-bit values in <= 10 bytes."""
    acc = np.uint64(0)
    for k in range(10):
        if i >= end:
            return 0, i, False
        b = buf[i]
        i += 1
        if k == 9 and b > 1:  # beyond 64 bits: fastavro reads a larger number
            return 0, i, False
        acc |= np.uint64(b & 0x7F) << np.uint64(7 * k)
        if b < 0x80:
            return np.int64(acc >> np.uint64(1)) ^ -np.int64(acc & np.uint64(1)), i, True
    return 0, i, False


@njit(cache=True, inline="always")
def _string(buf, i, end):
    """An ASCII string at ``i``: (start, end, next index, FNV-1a hash, ok)."""
    n, i, ok = _long(buf, i, end)
    if not ok or n < 0 or n > end - i:
        return 0, 0, i, _FNV_OFFSET, False
    h = _FNV_OFFSET
    for k in range(i, i + n):
        b = buf[k]
        if b >= 0x80:
            return 0, 0, i, h, False
        h = (h ^ np.uint64(b)) * _FNV_PRIME
    return i, i + n, i + n, h, True


@njit(cache=True, inline="always")
def _double(buf, i, end):
    if i + 8 > end:
        return 0.0, i, False
    return buf[i:i + 8].view(np.float64)[0], i + 8, True


@njit(cache=True, inline="always")
def _same(buf, s1, e1, s2, e2):
    if e1 - s1 != e2 - s2:
        return False
    for k in range(e1 - s1):
        if buf[s1 + k] != buf[s2 + k]:
            return False
    return True


@njit(cache=True)
def _decode(buf, starts, ends, n_num, n_cat):
    """Every body ``buf[starts[r]:ends[r]]``; the feature names of each must be body 0's.

    Returns (ok, event_time, model span + hash, slice span + hash, numeric values and nulls,
    categorical value spans, hashes and nulls, prediction and its null, label kind 0 null /
    1 int / 2 double with its int and double, the feature names' spans of body 0).
    """
    n = len(starts)
    ok = True
    etime = np.empty(n, np.int64)
    spans = np.empty((n, 4), np.int64)  # model start, end, slice start, end
    hashes = np.empty((n, 2), np.uint64)  # model, slice
    num = np.empty((n, max(n_num, 1)), np.float64)
    num_null = np.zeros((n, max(n_num, 1)), np.bool_)
    cat = np.empty((n, max(n_cat, 1), 2), np.int64)
    cat_hash = np.zeros((n, max(n_cat, 1)), np.uint64)
    cat_null = np.zeros((n, max(n_cat, 1)), np.bool_)
    pred = np.empty(n, np.float64)
    pred_null = np.zeros(n, np.bool_)
    label_kind = np.zeros(n, np.int8)
    label_int = np.zeros(n, np.int64)
    label_dbl = np.zeros(n, np.float64)
    names = np.zeros((n_num + n_cat, 2), np.int64)  # body 0's feature names
    for r in range(n):
        i, end = starts[r], ends[r]
        _, i, g = _long(buf, i, end)  # schema_version
        ok &= g
        _, _, i, _, g = _string(buf, i, end)  # event_id
        ok &= g
        etime[r], i, g = _long(buf, i, end)
        ok &= g
        s, e, i, h, g = _string(buf, i, end)
        ok &= g and e > s
        spans[r, 0], spans[r, 1], hashes[r, 0] = s, e, h
        s, e, i, h, g = _string(buf, i, end)
        ok &= g and e > s
        spans[r, 2], spans[r, 3], hashes[r, 1] = s, e, h
        if not ok:
            break
        for part in range(2):  # the numeric map, then the categorical one: one block of known size each
            want = n_num if part == 0 else n_cat
            cnt, i, g = _long(buf, i, end)
            ok &= g and cnt == want
            if not ok:
                break
            base = 0 if part == 0 else n_num
            for k in range(want):
                s, e, i, _, g = _string(buf, i, end)
                ok &= g
                if r == 0:
                    for j in range(k):  # a repeated key: a dict keeps one of them
                        ok &= not _same(buf, s, e, names[base + j, 0], names[base + j, 1])
                    names[base + k, 0], names[base + k, 1] = s, e
                else:
                    ok &= _same(buf, s, e, names[base + k, 0], names[base + k, 1])
                branch, i, g = _long(buf, i, end)
                ok &= g and (branch == 0 or branch == 1)
                if not ok:
                    break
                if part == 0:
                    if branch == 0:
                        num_null[r, k] = True
                    else:
                        num[r, k], i, g = _double(buf, i, end)
                        ok &= g
                elif branch == 0:
                    cat_null[r, k] = True
                else:
                    s, e, i, h, g = _string(buf, i, end)
                    ok &= g
                    cat[r, k, 0], cat[r, k, 1], cat_hash[r, k] = s, e, h
            if want > 0 and ok:
                cnt, i, g = _long(buf, i, end)  # the end of the map
                ok &= g and cnt == 0
            if not ok:
                break
        if ok:
            branch, i, g = _long(buf, i, end)
            if g and branch == 0:
                pred_null[r] = True
            elif g and branch == 1:
                pred[r], i, g = _double(buf, i, end)
                ok &= g
            else:
                ok = False
        if ok:
            branch, i, g = _long(buf, i, end)
            label_kind[r] = branch
            if g and branch == 1:
                label_int[r], i, g = _long(buf, i, end)
                ok &= g
            elif g and branch == 2:
                label_dbl[r], i, g = _double(buf, i, end)
                ok &= g
            else:
                ok &= g and branch == 0
        if ok:
            branch, i, g = _long(buf, i, end)  # model_version
            if g and branch == 1:
                _, _, i, _, g = _string(buf, i, end)
                ok &= g
            else:
                ok &= g and branch == 0
        ok &= i == end
        if not ok:
            break
    return ok, etime, spans, hashes, num, num_null, cat, cat_hash, cat_null, pred, pred_null, label_kind, \
        label_int, label_dbl, names


@njit(cache=True)
def _all_same(buf, spans, reps):
    """Each span (start, end) holds the same bytes as its representative span ``reps``."""
    for r in range(len(spans)):
        if not _same(buf, spans[r, 0], spans[r, 1], reps[r, 0], reps[r, 1]):
            return False
    return True


_HEADER, _BODY = itemgetter(slice(None, HEADER_LEN)), itemgetter(slice(HEADER_LEN, None))


class EventColumns:
    """A batch's events as arrays; each slice's columns as the lists its channels take."""

    def __init__(self, by_slice: dict[tuple[str, str], list[int]], times: list[int],
                 numeric: tuple[list[str], np.ndarray, np.ndarray], categorical: tuple[list[str], np.ndarray, list],
                 labels: list[Any], predictions: list[float | None]):
        self.by_slice = by_slice  # (model, slice) -> its events' batch indices, slices in first-seen order
        self.times = times
        self._numeric, self._categorical = numeric, categorical
        self._labels, self._predictions = labels, predictions

    def numeric(self, rows: list[int]) -> list[tuple[str, list[float | None]]]:
        """Each numeric feature's values at ``rows`` (None: null), in the events' key order."""
        names, values, nulls = self._numeric
        return [(name, _with_nulls(values[rows, k].tolist(), nulls[rows, k])) for k, name in enumerate(names)]

    def categorical(self, rows: list[int]) -> list[tuple[str, list[str | None]]]:
        names, codes, table = self._categorical
        return [(name, [table[c] for c in codes[rows, k].tolist()]) for k, name in enumerate(names)]

    def labels(self, rows: list[int]) -> list[Any]:
        return [self._labels[r] for r in rows]

    def predictions(self, rows: list[int]) -> list[float | None]:
        return [self._predictions[r] for r in rows]


def _with_nulls(values: list[float], nulls: np.ndarray) -> list[float | None]:
    if nulls.any():
        for j in np.flatnonzero(nulls).tolist():
            values[j] = None
    return values


def decode_columns(values: Sequence[bytes | None], limits: Any) -> EventColumns | None:
    """The batch as :class:`EventColumns`, or None unless every value takes the fast path
    (module doc): then decode it event by event, which gives each its verdict."""
    try:
        if (not values or max(map(len, values)) > limits.unbreakable_size + HEADER_LEN
                or set(map(_HEADER, values)) != {EVENT.header}):  # fmt: skip
            return None
    except TypeError:  # a None among them
        return None
    first = EVENT.read_current(values[0])
    if first is None:
        return None
    n_num, n_cat = len(first["features"]), len(first["categorical"])
    bodies = list(map(_BODY, values))
    lengths = np.fromiter(map(len, bodies), np.int64, len(bodies))
    ends = np.cumsum(lengths)
    buf = np.frombuffer(b"".join(bodies), np.uint8)
    (ok, times, spans, hashes, num, num_null, cat, cat_hash, cat_null, pred, pred_null, label_kind, label_int,
     label_dbl, names) = _decode(buf, ends - lengths, ends, n_num, n_cat)  # fmt: skip
    if not ok or not _numbers_within(limits.max_abs_value, num[:, :n_num], num_null[:, :n_num], pred, pred_null,
                                     label_kind, label_int, label_dbl):  # fmt: skip
        return None
    models, slices = _strings(buf, spans[:, 0:2], hashes[:, 0]), _strings(buf, spans[:, 2:4], hashes[:, 1])
    if models is None or slices is None:
        return None
    by_slice: dict[tuple[str, str], list[int]] = {}
    for e, key in enumerate(zip(models, slices)):
        idx = by_slice.get(key)
        if idx is None:
            by_slice[key] = [e]
        else:
            idx.append(e)
    feature_names = [bytes(buf[s:e]).decode("ascii") for s, e in names.tolist()]
    if feature_names != [*first["features"], *first["categorical"]]:
        return None
    codes, table = np.zeros((len(values), n_cat), np.int64), [None]
    if n_cat:
        filled = ~cat_null[:, :n_cat]
        found = _strings(buf, cat[:, :n_cat][filled], cat_hash[:, :n_cat][filled], unique=True)
        if found is None:
            return None
        table.extend(found[0])
        codes[filled] = found[1] + 1
    pred_list = pred.tolist()
    for r in np.flatnonzero(pred_null).tolist():
        pred_list[r] = None
    labels = [None if k == 0 else (i if k == 1 else d)
              for k, i, d in zip(label_kind.tolist(), label_int.tolist(), label_dbl.tolist())]  # fmt: skip
    return EventColumns(by_slice, times.tolist(), (feature_names[:n_num], num[:, :n_num], num_null[:, :n_num]),
                        (feature_names[n_num:], codes, table), labels, pred_list)  # fmt: skip


def _numbers_within(top: float, num: np.ndarray, num_null: np.ndarray, pred: np.ndarray, pred_null: np.ndarray,
                    label_kind: np.ndarray, label_int: np.ndarray, label_dbl: np.ndarray) -> bool:
    """schemas.events' value limits: features within +-top or NaN (missing), outcomes within +-top."""
    with np.errstate(invalid="ignore"):
        features_ok = bool(np.all(num_null | np.isnan(num) | (np.abs(num) <= top)))
        pred_ok = bool(np.all(pred_null | (np.abs(pred) <= top)))
        doubles_ok = bool(np.all((label_kind != 2) | (np.abs(label_dbl) <= top)))
    if top >= 2.0**63:  # every int64 label is within
        ints_ok = True
    else:  # compared as integers, as Python compares an int label with the float limit (no rounding)
        bound = math.floor(top)
        ints_ok = bool(np.all((label_kind != 1) | ((label_int <= bound) & (label_int >= -bound))))
    return features_ok and pred_ok and doubles_ok and ints_ok


def _strings(buf: np.ndarray, spans: np.ndarray, hashes: np.ndarray, unique: bool = False) -> Any:
    """Each span's string (or, ``unique``: the distinct strings and each span's index among
    them), matched by hash and then checked byte for byte; None on a hash collision."""
    _, first, inverse = np.unique(hashes, return_index=True, return_inverse=True)
    if not _all_same(buf, spans, spans[first][inverse]):
        return None
    texts = [bytes(buf[s:e]).decode("ascii") for s, e in spans[first].tolist()]
    if unique:
        return texts, inverse
    return [texts[i] for i in inverse.tolist()]


def warm_up() -> None:
    """Compile the decoder (or load it from numba's cache: about 8 s the first time on a machine,
    0.3 s after) before a worker takes partitions, so the first batch does not wait for it."""
    sample = {"event_id": "warm-up", "event_time": 0, "model": "m", "slice": "s", "features": {"x": 1.0},
              "categorical": {"c": "a"}, "prediction": 0.5, "label": 1}  # fmt: skip
    from schemas.events import DEFAULT_LIMITS

    decode_columns([EVENT.encode(sample)], DEFAULT_LIMITS)
