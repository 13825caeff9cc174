"""The one exception hierarchy of the project.

Every error we raise on purpose derives from :class:`DriftError`, so callers can catch
ours without swallowing programming errors. Messages say what was wrong and what is
accepted.
"""


class DriftError(Exception):
    """Root of all errors raised by this project."""


class ConfigError(DriftError):
    """A setting or model config value is invalid; the message names the key."""


class SchemaError(DriftError):
    """A record does not match its Avro schema, or bytes cannot be decoded."""


class UnknownKeyError(ConfigError):
    """A registry lookup used a key that is not registered."""

    def __init__(self, kind: str, key: str, valid: list[str]):
        self.kind, self.key, self.valid = kind, key, sorted(valid)
        super().__init__(f"unknown {kind} {key!r}; valid: {', '.join(self.valid)}")


class InfraError(DriftError):
    """Local infrastructure (broker, ClickHouse) could not be brought up or reached."""
