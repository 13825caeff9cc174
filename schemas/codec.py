"""Avro single-object encoding of our records (events' JSON form and limits: schemas.events).

Wire format (Avro spec, "Single-object encoding"): ``C3 01``, the 8-byte little-endian
CRC-64-AVRO fingerprint of the writer schema's parsing canonical form, then the Avro
binary body. Any client holding ``schemas/avro`` can decode it.

Schemas are parsed once, at import. Records of the current schema are decoded by cavro
(Cython, about half fastavro's time: the streams worker decodes every event); anything
cavro refuses goes through fastavro, whose verdict and message stand, so the fast path can
only ever accept what fastavro accepts (``tests/unit/test_codec_fast_path.py``). Readers
also know every historical version of a schema (``avro/history``) by fingerprint and
resolve old bytes to the current shape.
Evolution rule: a new version may only add fields *with defaults* (or remove fields that
had defaults), never change a field's type except by Avro promotion, and bumps the
``schema_version`` default; its predecessor moves to ``avro/history/<name>.v<N>.avsc``.
"""

from __future__ import annotations

import copy
import io
import json
import os
from functools import cached_property
from importlib import resources
from typing import Any

import cavro
from fastavro import schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint, parse_schema, to_parsing_canonical_form
from fastavro.validation import validate

from schemas.errors import SchemaError

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8

# record name -> .avsc file stem
RECORD_FILES = {
    "Event": "event",
    "DriftAlert": "drift_alert",
    "DriftStat": "drift_stat",
    "DeadLetter": "dead_letter",
    "RetrainRequest": "retrain_request",
    "RetrainResult": "retrain_result",
    "ModelUpdate": "model_update",
}


def _strip_logical_types(node: Any) -> Any:
    """Drop logicalType so timestamps stay epoch-millis ints in Python.

    The parsing canonical form ignores logicalType, so fingerprints are unchanged.
    """
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def _unbordered_guard() -> bytes:
    """8 random bytes no proper prefix of which is also a suffix (see :class:`FastReader`)."""
    while True:
        guard = os.urandom(8)
        if all(guard[:k] != guard[-k:] for k in range(1, 8)):
            return guard


class FastReader:
    """cavro's decoder for one schema, refusing a body with bytes left over.

    cavro decodes from the front of a buffer and ignores what follows, so the body is read
    as a record ``{value, guard}`` with a secret 8-byte guard appended: a body with trailing
    bytes, or one that ends early, reads other bytes than the guard there. The guard is
    random per process and unbordered (no shift of it matches itself), so a body can only
    pass with bytes left over if it holds the secret guard (chance 2**-64 per message).
    :meth:`read` returns None for anything it does not accept; the caller asks fastavro why.
    """

    def __init__(self, name: str, schema_json: dict[str, Any]):
        self.guard = _unbordered_guard()
        options = cavro.Options(record_decodes_to_dict=True)
        self._schema = cavro.Schema(
            {
                "type": "record",
                "name": f"{name}Framed",
                "namespace": "driftwatch.framed",
                "fields": [
                    {"name": "value", "type": _ints_as_longs(schema_json)},
                    {"name": "guard", "type": {"type": "fixed", "name": "Guard", "size": 8}},
                ],
            },
            options=options,
        )

    def read(self, body: bytes) -> dict[str, Any] | None:
        try:
            framed = self._schema.binary_decode(body + self.guard)
        except Exception:  # noqa: BLE001 - corrupt input: fastavro's verdict is the one reported
            return None
        return framed["value"] if framed["guard"] == self.guard else None


def _ints_as_longs(node: Any) -> Any:
    """The schema with every ``int`` read as ``long``: the same bytes (a zig-zag varint), but
    cavro would cut an int's varint to 32 bits where fastavro reads all of it."""
    if node == "int":
        return "long"
    if isinstance(node, dict):
        return {k: _ints_as_longs(v) if k in ("type", "items", "values", "fields") else v for k, v in node.items()}
    if isinstance(node, list):
        return [_ints_as_longs(v) for v in node]
    return node


def _load_json(relpath: str) -> dict[str, Any]:
    return json.loads(resources.files("schemas").joinpath("avro", relpath).read_text())


class RecordCodec:
    """Encoder/decoder for one record type, holding the parsed schemas."""

    def __init__(self, name: str, schema_json: dict[str, Any], history: list[dict[str, Any]] = ()):
        self.name = name
        self.schema_json = schema_json
        stripped = _strip_logical_types(copy.deepcopy(schema_json))
        self.schema = parse_schema(stripped)
        self.fingerprint = self._fingerprint(self.schema)
        self._writers: dict[bytes, Any] = {self.fingerprint: None}  # None: same as reader
        for old in history:
            parsed = parse_schema(_strip_logical_types(copy.deepcopy(old)))
            self._writers[self._fingerprint(parsed)] = parsed
        self.header = MAGIC + self.fingerprint
        self._fast = FastReader(name, stripped)

    @staticmethod
    def _fingerprint(parsed: Any) -> bytes:
        return bytes.fromhex(fingerprint(to_parsing_canonical_form(parsed), "CRC-64-AVRO"))

    @cached_property
    def version(self) -> int:
        return next(f["default"] for f in self.schema_json["fields"] if f["name"] == "schema_version")

    def encode(self, record: dict[str, Any]) -> bytes:
        out = io.BytesIO()
        out.write(self.header)
        try:
            schemaless_writer(out, self.schema, record, strict_allow_default=True)
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise SchemaError(f"{self.name} does not match its schema: {exc}") from exc
        return out.getvalue()

    def encode_with(self, record: dict[str, Any], writer_schema_json: dict[str, Any]) -> bytes:
        """Encode with another (e.g. older) schema version; used to test evolution."""
        parsed = parse_schema(_strip_logical_types(copy.deepcopy(writer_schema_json)))
        out = io.BytesIO()
        out.write(MAGIC + self._fingerprint(parsed))
        schemaless_writer(out, parsed, record)
        return out.getvalue()

    def read_current(self, data: bytes) -> dict[str, Any] | None:
        """The record of single-object ``data`` in the current schema that the fast path
        accepts; None for anything else (old versions, other bytes): :meth:`decode` says why."""
        return self._fast.read(data[HEADER_LEN:]) if data[:HEADER_LEN] == self.header else None

    def decode(self, data: bytes) -> dict[str, Any]:
        if len(data) < HEADER_LEN or data[:2] != MAGIC:
            raise SchemaError(
                f"{self.name}: not Avro single-object encoding (expected marker C3 01 and an 8-byte "
                f"fingerprint, got {data[:10].hex() or 'empty'})"
            )
        fp = data[2:HEADER_LEN]
        if fp not in self._writers:
            raise SchemaError(
                f"{self.name}: unknown schema fingerprint {fp.hex()}; known: "
                f"{', '.join(f.hex() for f in self._writers)}"
            )
        writer = self._writers[fp]
        if writer is None:
            record = self._fast.read(data[HEADER_LEN:])
            if record is not None:
                return record
        body = io.BytesIO(data[HEADER_LEN:])
        try:
            if writer is None:
                record = schemaless_reader(body, self.schema, None)
            else:
                record = schemaless_reader(body, writer, self.schema)
        except Exception as exc:  # fastavro raises many types on corrupt input
            raise SchemaError(f"{self.name}: corrupt Avro body: {type(exc).__name__}: {exc}") from exc
        if body.tell() != len(data) - HEADER_LEN:
            raise SchemaError(f"{self.name}: {len(data) - HEADER_LEN - body.tell()} trailing bytes after the record")
        return record

    def validate(self, record: dict[str, Any]) -> None:
        # fastavro builds a message for every union branch a value fails (a nullable field's
        # "null" branch, each time) when raise_errors is on: 156 us per event against 10 us
        # without. So check quietly, and ask for the reasons only when the record is bad.
        try:
            if validate(record, self.schema, raise_errors=False, strict=False):
                return
            validate(record, self.schema, raise_errors=True, strict=False)
        except Exception as exc:
            raise SchemaError(f"{self.name} does not match its schema: {exc}") from exc
        raise SchemaError(f"{self.name} does not match its schema")


def _load_codecs() -> dict[str, RecordCodec]:
    codecs = {}
    history_dir = resources.files("schemas").joinpath("avro", "history")
    for name, stem in RECORD_FILES.items():
        history = [
            json.loads(p.read_text())
            for p in sorted(history_dir.iterdir(), key=lambda p: p.name)
            if p.name.startswith(f"{stem}.v") and p.name.endswith(".avsc")
        ]
        codecs[name] = RecordCodec(name, _load_json(f"{stem}.avsc"), history)
    return codecs


CODECS: dict[str, RecordCodec] = _load_codecs()
EVENT = CODECS["Event"]
ALERT = CODECS["DriftAlert"]
STAT = CODECS["DriftStat"]
DEAD_LETTER = CODECS["DeadLetter"]
RETRAIN_REQUEST = CODECS["RetrainRequest"]
RETRAIN_RESULT = CODECS["RetrainResult"]
MODEL_UPDATE = CODECS["ModelUpdate"]
