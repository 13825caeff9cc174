"""The contracts: Avro schemas and codecs, topic names, settings, errors."""
