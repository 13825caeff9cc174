"""Users' own event topics, mapped field by field onto the canonical Event.

A source (one entry of ``sources:`` in the YAML model config) names a topic the user
already has, its format (JSON, or Avro with the user's ``.avsc``), and where each Event
field is in it: dotted paths into the (nested) record, or constants. The streams worker
subscribes to these topics too and turns each message into a canonical event; one that
does not fit goes to the dead-letter topic with the reason, like a bad canonical event.

``route`` says what happens to the mapped event. ``bridge`` (the default) produces it to the
events topic keyed by slice, and the worker monitors it from there: right whatever the user's
topic is keyed by and however many partitions it has (the source offset is committed only
after the forwarded event is acknowledged; a crash may forward an event twice). ``direct``
monitors it in place, saving the second trip through the broker, and is for topics keyed by
slice with as many partitions as the events topic (the worker refuses other counts).

.. code-block:: yaml

    sources:
      - topic: payments.scored
        format: avro                 # json (default) or avro
        schema: schemas/payment.avsc # avro: the writer schema (.avsc)
        framing: auto                # avro: auto, single_object (C3 01 + fingerprint), confluent (00 + id), raw
        event_id: txn.id             # optional: default "<topic>/<partition>/<offset>"
        event_time: ts               # optional: default the Kafka message timestamp
        event_time_unit: ms          # ms (default), s, us or ns for numbers; ISO-8601 strings always work
        model: {value: fraud}        # a constant ({value: ...}) or a path ({field: ...}, or just the path)
        slice: [country, channel]    # one path, or several joined with "/"
        features: [amount, risk.score]           # numeric: paths (the feature is named by the path) ...
        categorical: {device: client.device}     # ... or a map name -> path
        prediction: score
        label: outcome.is_fraud      # booleans become 0/1
        route: bridge                # bridge (default) or direct, see below
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from fastavro import parse_schema, schemaless_reader
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.codec import EVENT, HEADER_LEN, MAGIC, RecordCodec
from schemas.errors import ConfigError, SchemaError
from schemas.events import _event_time_ms, loads_json

_MISSING = object()
TIME_UNITS = {"ms": 1.0, "s": 1000.0, "us": 1e-3, "ns": 1e-6}


class Constant(BaseModel):
    model_config = ConfigDict(extra="forbid")
    value: str


class FieldRef(BaseModel):
    model_config = ConfigDict(extra="forbid")
    field: str


class SourceConfig(BaseModel):
    """Where the Event's fields are in a user's record (see the module docstring)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    topic: str = Field(min_length=1)
    format: Literal["json", "avro"] = "json"
    schema_file: Path | None = Field(None, alias="schema")
    framing: Literal["auto", "single_object", "confluent", "raw"] = "auto"
    event_id: str | None = None
    event_time: str | None = None
    event_time_unit: Literal["ms", "s", "us", "ns"] = "ms"
    model: str | Constant | FieldRef
    slice: str | list[str] | Constant
    features: list[str] | dict[str, str] = Field(default_factory=list)
    categorical: list[str] | dict[str, str] = Field(default_factory=list)
    prediction: str | None = None
    label: str | None = None
    route: Literal["bridge", "direct"] = "bridge"

    @field_validator("slice")
    @classmethod
    def _some_slice(cls, v: Any) -> Any:
        if isinstance(v, list) and not v:
            raise ValueError("give at least one path")
        return v


def _getter(path: str) -> Callable[[Any], Any]:
    """A dotted path into nested dicts; _MISSING when any step is absent."""
    parts = path.split(".")
    if len(parts) == 1:
        key = parts[0]
        return lambda rec: rec.get(key, _MISSING) if isinstance(rec, dict) else _MISSING

    def get(rec: Any) -> Any:
        for p in parts:
            if not isinstance(rec, dict) or p not in rec:
                return _MISSING
            rec = rec[p]
        return rec

    return get


def _named(spec: list[str] | dict[str, str]) -> list[tuple[str, str, Callable[[Any], Any]]]:
    pairs = [(p, p) for p in spec] if isinstance(spec, list) else list(spec.items())
    return [(name, path, _getter(path)) for name, path in pairs]


class Source:
    """One mapped topic: ``to_event(value, partition, offset, timestamp_ms)`` -> canonical event."""

    def __init__(self, config: SourceConfig, base_dir: Path | None = None):
        self.config = config
        self.topic = config.topic
        self.bridged = config.route == "bridge"
        self._schema = None
        self._fingerprint = b""
        if config.format == "avro":
            if config.schema_file is None:
                raise ConfigError(f"sources[{config.topic}]: format avro needs 'schema' (a .avsc file)")
            path = config.schema_file if config.schema_file.is_absolute() or base_dir is None else base_dir / config.schema_file
            try:
                self._schema = parse_schema(json.loads(path.read_text()))
            except (OSError, ValueError) as exc:
                raise ConfigError(f"sources[{config.topic}].schema: cannot use {path}: {exc}") from exc
            except Exception as exc:  # fastavro's SchemaParseException and friends
                raise ConfigError(f"sources[{config.topic}].schema: {path} is not an Avro schema: {exc}") from exc
            self._fingerprint = RecordCodec._fingerprint(self._schema)
        self._id = _getter(config.event_id) if config.event_id else None
        self._time = _getter(config.event_time) if config.event_time else None
        self._time_scale = TIME_UNITS[config.event_time_unit]
        self._model = self._value_or_path("model", config.model)
        if isinstance(config.slice, Constant):
            self._slices = None
            self._slice_value = config.slice.value
        else:
            paths = [config.slice] if isinstance(config.slice, str) else config.slice
            self._slices = [(p, _getter(p)) for p in paths]
        self._features = _named(config.features)
        self._categorical = _named(config.categorical)
        self._prediction = _getter(config.prediction) if config.prediction else None
        self._label = _getter(config.label) if config.label else None

    def _value_or_path(self, name: str, spec: str | Constant | FieldRef) -> Callable[[Any], Any]:
        if isinstance(spec, Constant):
            value = spec.value
            return lambda rec: value
        path = spec.field if isinstance(spec, FieldRef) else spec
        get = _getter(path)

        def read(rec: Any) -> Any:
            v = get(rec)
            if v is _MISSING or v is None or v == "":
                raise SchemaError(f"{self.topic}: {name} field {path!r} missing or empty")
            return str(v)

        return read

    # ------------------------------------------------------------------ decoding
    def record(self, value: bytes | None) -> Any:
        if not value:
            raise SchemaError(f"{self.topic}: empty message")
        if self.config.format == "json":
            return loads_json(value, self.topic)  # every failure (deep nesting too) a SchemaError
        body = value
        framing = self.config.framing
        if framing == "single_object" or (framing == "auto" and value[:2] == MAGIC):
            if value[:2] != MAGIC or len(value) < HEADER_LEN:
                raise SchemaError(f"{self.topic}: not Avro single-object encoding (first bytes {value[:10].hex()})")
            if value[2:HEADER_LEN] != self._fingerprint:
                raise SchemaError(
                    f"{self.topic}: writer schema fingerprint {value[2:HEADER_LEN].hex()} is not the configured "
                    f"schema's {self._fingerprint.hex()}"
                )
            body = value[HEADER_LEN:]
        elif framing == "confluent" or (framing == "auto" and value[:1] == b"\x00" and len(value) > 5):
            body = value[5:]  # magic byte 0 + 4-byte schema registry id; the configured .avsc is the writer
        buf = io.BytesIO(body)
        try:
            rec = schemaless_reader(buf, self._schema, None)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise SchemaError(f"{self.topic}: corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        if buf.tell() != len(body):
            raise SchemaError(f"{self.topic}: {len(body) - buf.tell()} trailing bytes after the Avro record")
        return rec

    def to_event(self, value: bytes | None, partition: int, offset: int, timestamp_ms: int | None) -> dict[str, Any]:
        rec = self.record(value)
        if not isinstance(rec, dict):
            raise SchemaError(f"{self.topic}: expected a JSON object / Avro record, got {type(rec).__name__}")
        t = self.topic
        if self._id is not None:
            eid = self._id(rec)
            if eid is _MISSING or eid is None:
                raise SchemaError(f"{t}: event_id field {self.config.event_id!r} missing")
            event_id = str(eid)
        else:
            event_id = f"{t}/{partition}/{offset}"
        if self._time is not None:
            raw = self._time(rec)
            if raw is _MISSING or raw is None:
                raise SchemaError(f"{t}: event_time field {self.config.event_time!r} missing")
            try:
                if isinstance(raw, (int, float)) and not isinstance(raw, bool) and self._time_scale != 1.0:
                    raw = int(raw * self._time_scale)  # NaN and +-inf (JSON allows them) raise here
                event_time = _event_time_ms(raw)
            except (SchemaError, ValueError, OverflowError) as exc:
                raise SchemaError(f"{t}: {self.config.event_time}: {exc}") from exc
        elif timestamp_ms is not None and timestamp_ms >= 0:
            event_time = timestamp_ms
        else:
            raise SchemaError(f"{t}: no event_time field configured and the message has no timestamp")
        if self._slices is None:
            slice_ = self._slice_value
        else:
            parts = []
            for path, get in self._slices:
                v = get(rec)
                if v is _MISSING or v is None or v == "":
                    raise SchemaError(f"{t}: slice field {path!r} missing or empty")
                parts.append(str(v))
            slice_ = "/".join(parts)
        features: dict[str, float | None] = {}
        for name, path, get in self._features:
            v = get(rec)
            if v is _MISSING or v is None:
                features[name] = None
            elif isinstance(v, (int, float)) and not isinstance(v, bool):
                features[name] = float(v)
            else:
                raise SchemaError(f"{t}: feature {name!r} ({path}) must be a number or null, got {v!r}")
        categorical: dict[str, str | None] = {}
        for name, path, get in self._categorical:
            v = get(rec)
            if v is _MISSING or v is None:
                categorical[name] = None
            elif isinstance(v, bool):
                categorical[name] = "true" if v else "false"
            elif isinstance(v, (str, int)):
                categorical[name] = str(v)
            else:
                raise SchemaError(f"{t}: categorical {name!r} ({path}) must be a string, an int or null, got {v!r}")
        prediction = self._number("prediction", self._prediction, rec)
        label = self._number("label", self._label, rec)
        if isinstance(label, float) and label.is_integer() and abs(label) < 2**31:
            label = int(label)
        return {
            "schema_version": EVENT.version,
            "event_id": event_id,
            "event_time": event_time,
            "model": self._model(rec),
            "slice": slice_,
            "features": features,
            "categorical": categorical,
            "prediction": prediction,
            "label": label,
        }

    def _number(self, name: str, get: Callable[[Any], Any] | None, rec: Any) -> float | int | None:
        if get is None:
            return None
        v = get(rec)
        if v is _MISSING or v is None:
            return None
        if isinstance(v, bool):
            return int(v)
        if isinstance(v, (int, float)) and math.isfinite(v):
            return v if isinstance(v, int) else float(v)
        raise SchemaError(f"{self.topic}: {name} ({getattr(self.config, name)}) must be a finite number, a boolean or null, got {v!r}")


def build_sources(raw: list[dict[str, Any]], base_dir: Path | None = None) -> dict[str, Source]:
    """Validate the ``sources:`` entries of the model config; topic -> Source."""
    out: dict[str, Source] = {}
    for i, entry in enumerate(raw):
        try:
            cfg = SourceConfig.model_validate(entry)
        except ValidationError as exc:
            problems = [f"sources[{i}].{'.'.join(str(x) for x in e['loc'])}: {e['msg']}" for e in exc.errors()]
            raise ConfigError("model config: " + "; ".join(problems)) from exc
        if cfg.topic in out:
            raise ConfigError(f"model config: sources[{i}]: topic {cfg.topic!r} is mapped twice")
        out[cfg.topic] = Source(cfg, base_dir)
    return out
