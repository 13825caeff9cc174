#!/usr/bin/env python3
"""ClickHouse executable UDF: driftwatch records (Avro single-object encoding) to JSON.

ClickHouse reads Avro object-container files and Confluent-framed Avro, but not Avro's
single-object encoding that driftwatch writes (C3 01, CRC-64-AVRO fingerprint, body). This
script bridges it for the Kafka table engine path (see README.md here): ClickHouse sends
``record_name<TAB>base64(value)`` lines (TabSeparated) and reads one JSON object per line
back; bytes fields come out base64-encoded, timestamps as epoch milliseconds. A message that
does not decode yields ``{"_error": "..."}`` so the materialized view can route it away.
Needs the driftwatch package (for ``schemas/``) in the Python that runs it.
"""

from __future__ import annotations

import base64
import json
import sys

from schemas.codec import CODECS


def _jsonable(value):
    if isinstance(value, bytes):
        return base64.b64encode(value).decode("ascii")
    raise TypeError(f"cannot encode {type(value).__name__}")


def decode_line(line: str) -> str:
    """One TabSeparated input line to one JSON output line (no newline)."""
    name, _, b64 = line.rstrip("\n").partition("\t")
    try:
        codec = CODECS[name]
        record = codec.decode(base64.b64decode(b64, validate=True))
        return json.dumps(record, default=_jsonable, allow_nan=True)
    except Exception as exc:  # noqa: BLE001 - every failure becomes a row the view can route
        return json.dumps({"_error": f"{type(exc).__name__}: {exc}"})


def main() -> None:
    for line in sys.stdin:
        sys.stdout.write(decode_line(line) + "\n")
        sys.stdout.flush()  # ClickHouse waits for each block's answers


if __name__ == "__main__":
    main()
