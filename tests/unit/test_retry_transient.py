"""Start-up metadata calls ride out a settling broker (NOT_LEADER_FOR_PARTITION on a new topic)."""

from __future__ import annotations

import pytest
from confluent_kafka import KafkaError, KafkaException

from runtime.kafka import is_transient, retry_transient


def _failing(codes: list[int], result: object = "ok"):
    calls = []

    def call():
        calls.append(1)
        if len(calls) <= len(codes):
            raise KafkaException(KafkaError(codes[len(calls) - 1]))
        return result

    return call, calls


def test_not_leader_then_success_is_retried() -> None:
    call, calls = _failing([KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError._TIMED_OUT])
    assert retry_transient(call, "watermarks", pause=0.001) == "ok"
    assert len(calls) == 3


def test_a_permanent_error_is_raised_at_once() -> None:
    call, calls = _failing([KafkaError.TOPIC_AUTHORIZATION_FAILED])
    with pytest.raises(KafkaException):
        retry_transient(call, "watermarks", pause=0.001)
    assert len(calls) == 1


def test_gives_up_after_the_timeout() -> None:
    call, _ = _failing([KafkaError.NOT_LEADER_FOR_PARTITION] * 1000)
    with pytest.raises(KafkaException):
        retry_transient(call, "watermarks", timeout=0.05, pause=0.01)


def test_only_kafka_errors_count_as_transient() -> None:
    assert is_transient(KafkaException(KafkaError(KafkaError.LEADER_NOT_AVAILABLE)))
    assert not is_transient(ValueError("x"))
    assert not is_transient(KafkaException(KafkaError(KafkaError.INVALID_CONFIG)))
