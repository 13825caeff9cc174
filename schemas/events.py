"""Events on the input topic, Avro or JSON, both validated against the Event schema.

JSON events are checked and coerced to the Event schema's Python shape
(:func:`normalize_event`); every decoded event is then held to :class:`EventLimits`, so the
one decoder (:func:`decode_event`) gives every reader of the events topic the same event
or the same reason to refuse it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import chain
from operator import itemgetter
from typing import Any

from schemas.codec import EVENT, HEADER_LEN, MAGIC
from schemas.errors import SchemaError

_EVENT_FIELDS = {f["name"] for f in EVENT.schema_json["fields"]}


def _event_time_ms(value: Any) -> int:
    if isinstance(value, bool):
        raise SchemaError("event_time: expected epoch milliseconds (int) or an ISO-8601 string, got a boolean")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value)  # Python 3.11 reads a trailing Z too
        except ValueError as exc:
            raise SchemaError(f"event_time: {value!r} is not ISO-8601 nor epoch milliseconds") from exc
        if dt.tzinfo is None:
            raise SchemaError(f"event_time: {value!r} has no timezone; add 'Z' or an offset")
        return int(dt.timestamp() * 1000)
    raise SchemaError(f"event_time: expected epoch milliseconds (int) or an ISO-8601 string, got {value!r}")


def _numeric_map(name: str, value: Any) -> dict[str, float | None]:
    if not isinstance(value, dict):
        raise SchemaError(f"{name}: expected an object of name -> number, got {type(value).__name__}")
    out: dict[str, float | None] = {}
    for key, v in value.items():
        _text(f"{name} name", key)
        if v is None:
            out[key] = None
        elif isinstance(v, (int, float)):  # true/false count as 1/0 (a flag feature)
            out[key] = float(v)
        else:
            raise SchemaError(f"{name}.{key}: expected a number or null, got {v!r}")
    return out


def _text(name: str, value: str) -> str:
    """A JSON string as it will be written (UTF-8): a lone surrogate (``"\\ud800"``) cannot be."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise SchemaError(f"{name[:300]}: not valid Unicode text ({exc.reason} at {exc.start})") from None
    return value


def _identifier(name: str, value: Any) -> str:
    """event_id, model and slice: strings; integer ids (``"slice": 7``) are taken as their text."""
    if isinstance(value, str):
        return _text(name, value)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise SchemaError(f"{name}: expected a string, got {value!r}")


def _optional_identifier(name: str, value: Any) -> str | None:
    return None if value is None else _identifier(name, value)


def _category(name: str, value: Any) -> str | None:
    """A categorical value: a string; a number or true/false is taken as its JSON text."""
    _text("categorical name", name)
    if value is None:
        return value
    if isinstance(value, str):
        return _text(f"categorical.{name}", value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int) or (isinstance(value, float) and math.isfinite(value)):
        return json.dumps(value)
    raise SchemaError(f"categorical.{name}: expected a string, number, true/false or null, got {value!r}")


def normalize_event(obj: Any) -> dict[str, Any]:
    """Check a JSON-like event and coerce it to the Event schema's Python shape."""
    if not isinstance(obj, dict):
        raise SchemaError(f"event: expected a JSON object, got {type(obj).__name__}")
    unknown = set(obj) - _EVENT_FIELDS
    if unknown:
        raise SchemaError(f"event: unknown field(s) {sorted(unknown)}; accepted: {sorted(_EVENT_FIELDS)}")
    missing = [f for f in ("event_id", "event_time", "model", "slice") if obj.get(f) in (None, "")]
    if missing:
        raise SchemaError(f"event: required field(s) missing or empty: {missing}")
    ids = {f: _identifier(f, obj[f]) for f in ("event_id", "model", "slice")}
    categorical = obj.get("categorical") or {}
    if not isinstance(categorical, dict):
        raise SchemaError(f"categorical: expected an object of name -> string or null, got {type(categorical).__name__}")
    prediction = obj.get("prediction")
    if prediction is not None:
        if not isinstance(prediction, (int, float)):
            raise SchemaError(f"prediction: expected a number, true/false or null, got {prediction!r}")
        prediction = float(prediction)
    label = obj.get("label")
    if label is not None:
        if not isinstance(label, (int, float)):
            raise SchemaError(f"label: expected an int, a number, true/false or null, got {label!r}")
        label = int(label) if isinstance(label, bool) else label
    event = {
        "schema_version": EVENT.version,
        **ids,
        "event_time": _event_time_ms(obj["event_time"]),
        "features": _numeric_map("features", obj.get("features") or {}),
        "categorical": {k: _category(k, v) for k, v in categorical.items()},
        "prediction": prediction,
        "label": label,
        "model_version": _optional_identifier("model_version", obj.get("model_version")),
    }
    if not -(2**63) <= event["event_time"] < 2**63:
        raise SchemaError(f"event_time: {event['event_time']} out of range for a 64-bit long")
    if not -(2**31) <= (label if isinstance(label, int) else 0) < 2**31:
        label = float(label)
        event["label"] = label
    EVENT.validate(event)
    return event


MAX_JSON_DEPTH_HINT = 900  # about where CPython's json parser gives up (the recursion limit)


def loads_json(data: bytes | str, what: str = "event") -> Any:
    """``json.loads`` whose every failure is a SchemaError with the reason.

    Deep nesting (``{"a":{"a":...}}`` 50,000 levels) stops the C parser at the
    interpreter's recursion limit within microseconds; that RecursionError, invalid
    UTF-8 and over-long integers become one clear reason instead of a traceback.
    """
    try:
        if isinstance(data, bytes):  # strictly: json.loads(bytes) lets encoded lone surrogates through
            data = data.decode("utf-8")
        return json.loads(data)
    except RecursionError:
        raise SchemaError(
            f"{what}: JSON nested too deeply (over about {MAX_JSON_DEPTH_HINT} levels; an event has at most 3)"
        ) from None
    except (ValueError, UnicodeDecodeError, TypeError) as exc:  # JSONDecodeError is a ValueError
        raise SchemaError(f"{what}: invalid JSON: {exc}") from None


def parse_json_event(data: bytes | str) -> dict[str, Any]:
    return normalize_event(loads_json(data))


@dataclass(frozen=True)
class EventLimits:
    """What one event may carry; a bigger one is dead-lettered with the limit named.

    ``max_id_length``: characters of event_id, model, slice, model_version, feature names
    and categorical names and values (a 100,000-character slice would otherwise become a
    slice, with its detectors, for good). ``max_features``: numeric plus categorical
    entries (each costs a set of detectors per slice). ``max_abs_value``: feature,
    prediction and label magnitudes; beyond 1e150 a square overflows a double and the
    variance detectors would compute inf. NaN features stay "missing", as null does.
    """

    max_id_length: int = 256
    max_features: int = 1000
    max_abs_value: float = 1e150

    @property
    def unbreakable_size(self) -> int:
        """The longest Avro body that cannot break a length or count limit: a string takes at
        least a byte a character there, a map entry at least 2 (key length, union branch)."""
        return min(self.max_id_length, 2 * self.max_features)

    @classmethod
    def from_settings(cls, settings: Any) -> EventLimits:
        return cls(settings.event_max_id_length, settings.event_max_features)


DEFAULT_LIMITS = EventLimits()
_ID_SETTING = "DRIFT_EVENT_MAX_ID_LENGTH"


def _within(values: Any, top: float) -> bool:
    """All values in [-top, top] (None and NaN allowed), with C-level min/max on the hot path."""
    if not values:
        return True
    try:
        lo, hi = min(values), max(values)
    except TypeError:  # a None among them
        return all(v is None or -top <= v <= top or math.isnan(v) for v in values)
    if lo is None or hi is None:  # a lone None
        return all(v is None or -top <= v <= top or math.isnan(v) for v in values)
    if math.isnan(lo) or math.isnan(hi):  # a leading NaN sticks in min/max: look at each
        return all(-top <= v <= top or math.isnan(v) for v in values)
    return -top <= lo and hi <= top


def _finite_within(values: list[float], top: float) -> bool:
    """All values in [-top, top] and none NaN, in C-level passes (a NaN makes the sum NaN)."""
    return not values or (-top <= min(values) and max(values) <= top and not math.isnan(sum(values)))


def check_limits(event: dict[str, Any], limits: EventLimits = DEFAULT_LIMITS, size: int | None = None) -> dict[str, Any]:
    """Raise SchemaError if ``event`` (canonical shape) exceeds ``limits``; return it otherwise.

    ``size``: the length of the Avro body the event was decoded from, when it was; up to
    ``limits.unbreakable_size`` only its numbers are checked (most events, cheaply).
    """
    if size is None or size > limits.unbreakable_size:
        _check_sizes(event, limits)
    top = limits.max_abs_value
    features = event["features"]
    if features and not _within(features.values(), top):
        for key, v in features.items():  # the slow path only names the culprit
            if v is not None and not -top <= v <= top and not math.isnan(v):  # NaN means missing, as null
                raise SchemaError(f"features.{key}: {v!r} is not a finite number within +-{top:g}")
    for name in ("prediction", "label"):
        v = event.get(name)
        if v is not None and not -top <= v <= top:
            raise SchemaError(f"{name}: {v!r} is not a finite number within +-{top:g}")
    return event


def _check_sizes(event: dict[str, Any], limits: EventLimits) -> None:
    n = limits.max_id_length
    for name in ("event_id", "model", "slice", "model_version"):
        value = event.get(name)
        if value is not None and len(value) > n:
            raise SchemaError(f"event: {name} is {len(value):,} characters, over the limit of {n} ({_ID_SETTING})")
    features, categorical = event["features"], event["categorical"]
    if len(features) + len(categorical) > limits.max_features:
        raise SchemaError(
            f"event: {len(features) + len(categorical):,} features, over the limit of {limits.max_features} "
            f"(DRIFT_EVENT_MAX_FEATURES)"
        )
    if features and max(map(len, features)) > n:
        key = next(k for k in features if len(k) > n)
        raise SchemaError(f"event: a feature name is {len(key):,} characters, over the limit of {n} ({_ID_SETTING})")
    for key, v in categorical.items():
        if len(key) > n or (v is not None and len(v) > n):
            raise SchemaError(f"categorical.{key[:64]}: name or value over the limit of {n} characters ({_ID_SETTING})")


def decode_event(data: bytes | None, limits: EventLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """Decode an input-topic message: Avro single-object or a JSON object.

    The one decoder of every reader of the events topic (streams, snapshot reads, rollout):
    whatever the bytes, it returns a valid event within ``limits`` or raises
    :class:`SchemaError` with the reason (no RecursionError, MemoryError or
    UnicodeDecodeError escapes), so every reader dead-letters or skips the same records
    for the same reason.
    """
    try:
        event = _decode_event(data)
        return check_limits(event, limits, len(data) - HEADER_LEN if data[:2] == MAGIC else None)
    except SchemaError:
        raise
    except (RecursionError, MemoryError) as exc:
        raise SchemaError(f"event: too large or too deeply nested to decode ({type(exc).__name__})") from None
    except Exception as exc:  # noqa: BLE001 - the contract: only SchemaError leaves the decoder
        raise SchemaError(f"event: undecodable: {type(exc).__name__}: {exc}") from None


def decode_events(values: Sequence[bytes | None], limits: EventLimits = DEFAULT_LIMITS) -> list[dict[str, Any] | SchemaError]:
    """:func:`decode_event` over a batch: per value, the same event or the SchemaError it raises.

    The streams worker's path. Small current-schema Avro events (a body too short to break a
    length or count limit: ``limits.unbreakable_size``) are read by the fast path and their
    numbers held to the limit in one pass over the batch (if one is out, each is checked
    to name it); any other value goes through :func:`decode_event`.
    """
    small = limits.unbreakable_size + HEADER_LEN
    read = EVENT.read_current
    out: list[dict[str, Any] | SchemaError] = []
    fast: list[int] = []
    for data in values:
        event = read(data) if data and len(data) <= small else None
        if event is not None and event["slice"] and event["model"]:
            fast.append(len(out))
            out.append(event)
            continue
        try:
            out.append(decode_event(data, limits))
        except SchemaError as exc:  # kept without its traceback: its frames would hold the batch in a cycle
            out.append(SchemaError(str(exc)))
    if fast:
        events = [out[i] for i in fast]
        features = list(chain.from_iterable(map(dict.values, map(itemgetter("features"), events))))
        top = limits.max_abs_value
        outcomes = [v for v in chain(map(itemgetter("prediction"), events), map(itemgetter("label"), events))
                    if v is not None]  # fmt: skip
        if not (_within(features, top) and _finite_within(outcomes, top)):
            for i in fast:  # name the culprits, one by one
                try:
                    check_limits(out[i], limits, 0)
                except SchemaError as exc:
                    out[i] = SchemaError(str(exc))
    return out


def _decode_event(data: bytes | None) -> dict[str, Any]:
    if not data:
        raise SchemaError("event: empty message; expected Avro single-object encoding or a JSON object")
    if data[:2] == MAGIC:
        event = EVENT.decode(data)
    elif data.lstrip()[:1] == b"{":
        return parse_json_event(data)
    else:
        raise SchemaError(
            f"event: neither Avro single-object encoding (marker C3 01) nor a JSON object "
            f"(first bytes {data[:8].hex()})"
        )
    if not event["slice"] or not event["model"]:
        raise SchemaError("event: model and slice must be non-empty")
    return event


def is_missing(value: float | None) -> bool:
    return value is None or math.isnan(value)
