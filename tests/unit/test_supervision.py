"""driftctl run's supervision: restart policy, the process plan, throttled client logs, one stop helper."""

from __future__ import annotations

import gc
import logging
import signal
import subprocess
import sys

import pytest

from deploy import services
from deploy.services import EX_CONFIG, RestartPolicy, ServiceGroup, Slot, parse_workers, plan_slots
from runtime import metrics
from runtime.kafka_logs import Throttle, kafka_log_config, line_key
from runtime.service import stop_on_signals, tune_gc
from schemas.errors import ConfigError
from schemas.settings import load_settings


def test_backoff_doubles_for_quick_deaths_and_resets_after_a_healthy_run() -> None:
    p = RestartPolicy(initial=0.5, maximum=4.0, healthy_after=60.0)
    deaths = 0
    delays = []
    for _ in range(6):
        deaths = p.quick_deaths(deaths, started=0.0, died=1.0)
        delays.append(p.delay(deaths - 1))
    assert delays == [0.5, 1.0, 2.0, 4.0, 4.0, 4.0]
    assert p.quick_deaths(deaths, started=0.0, died=61.0) == 0  # ran long enough: a fresh start


def test_parse_workers_names_the_bad_part() -> None:
    assert parse_workers("streams=2, retrain=3") == {"streams": 2, "router": 1, "retrain": 3, "rollout": 1, "sink": 1}
    assert parse_workers(None, ("streams",)) == {"streams": 1}
    with pytest.raises(ConfigError, match="unknown service 'stream'.*valid: streams"):
        parse_workers("stream=2")
    for bad in ("streams", "streams=0", "streams=x"):
        with pytest.raises(ConfigError, match="NAME=N"):
            parse_workers(bad)


def test_plan_gives_unique_worker_ids_and_ports() -> None:
    settings = load_settings(metrics_port=19600, worker_id="host")
    slots = plan_slots(settings, {"streams": 3, "router": 1, "retrain": 2, "rollout": 1, "sink": 1})
    assert [s.key for s in slots] == ["streams", "streams-2", "streams-3", "router", "retrain", "retrain-2", "rollout",
                                      "sink"]
    streams_ids = [s.worker_id for s in slots if s.service == "streams"]
    assert streams_ids == ["host-1", "host-2", "host-3"]
    assert next(s.worker_id for s in slots if s.service == "router") == "host"  # alone: unchanged
    ports = [s.metrics_port for s in slots]
    assert len(set(ports)) == len(ports)
    first = {s.service: s.metrics_port for s in slots if s.index == 1}
    assert first == {n: 19600 + o for n, o in metrics.SERVICE_PORT_OFFSETS.items()}  # usual ports kept
    assert services.supervisor_port(settings, slots) not in ports
    assert all(s.metrics_port is None for s in plan_slots(load_settings(metrics_port=0), {"streams": 2}))


def test_more_than_one_sink_needs_a_server_store() -> None:
    with pytest.raises(ConfigError, match="sink=2.*DRIFT_CLICKHOUSE_DSN"):
        plan_slots(load_settings(), {"sink": 2})
    server = load_settings(clickhouse_dsn="clickhouse://u:p@127.0.0.1:8123/db")
    assert len(plan_slots(server, {"sink": 2})) == 2


def _child(code: int) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"raise SystemExit({code})"])


def test_a_dead_process_is_restarted_after_its_backoff_and_counted(monkeypatch) -> None:
    spawned: list[Slot] = []

    def spawn(_settings, slot, _log_dir):
        spawned.append(slot)
        return _child(3) if len(spawned) == 1 else subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])

    monkeypatch.setattr(services, "_spawn", spawn)
    slot = Slot("router", 1, 1, "w-test-restart", None)
    group = ServiceGroup(load_settings(), policy=RestartPolicy(initial=2.0))
    proc = group.start(slot)
    proc.popen.wait()
    before = metrics.SERVICE_RESTARTS.labels("router", "w-test-restart")._value.get()
    t = proc.started + 100.0  # a long healthy run before it died
    [line] = group.supervise(t)
    assert "exited with code 3; restarting it in 2.0s" in line
    assert group.supervise(t + 1.0) == []  # not yet due
    [line] = group.supervise(t + 2.0)
    assert "router restarted" in line and group.restarts() == {"router": 1}
    assert metrics.SERVICE_RESTARTS.labels("router", "w-test-restart")._value.get() == before + 1
    assert group.alive() == {"router": True}
    assert group.stop(timeout=10) == {"router": -signal.SIGTERM}


def test_a_configuration_error_is_not_restarted(monkeypatch) -> None:
    monkeypatch.setattr(services, "_spawn", lambda *_: _child(EX_CONFIG))
    group = ServiceGroup(load_settings())
    group.start(Slot("streams", 1, 1, "w", None)).popen.wait()
    group.supervise()
    assert group.fatal and "configuration" in group.fatal
    assert group.supervise() == [] and group.restarts() == {"streams": 0}


def test_throttle_admits_one_line_per_interval_and_counts_the_rest() -> None:
    now = [0.0]
    t = Throttle(interval=30.0, clock=lambda: now[0])
    key = line_key("127.0.0.1:9092/1: Connect failed (after 3ms in state CONNECT)")
    assert key == line_key("127.0.0.1:9092/1: Connect failed (after 17ms in state CONNECT)")
    assert t.admit(key) == (True, 0)
    for _ in range(5):
        now[0] += 1
        assert t.admit(key) == (False, 0)
    assert t.admit("another line") == (True, 0)
    now[0] = 31.0
    assert t.admit(key) == (True, 5)


def test_kafka_log_config_throttles_librdkafka_lines_and_client_errors(caplog) -> None:
    from confluent_kafka import KafkaError

    logger = logging.getLogger("test.kafka_logs")
    conf = kafka_log_config(logger, interval=3600)
    with caplog.at_level(logging.DEBUG, logger="test.kafka_logs"):
        for ms in range(50):
            conf["logger"].log(40, "%s [%s] %s", "FAIL", "rdkafka#consumer-1", f"Connect failed (after {ms}ms)")
            conf["error_cb"](KafkaError(KafkaError._TRANSPORT, f"Connect failed (after {ms}ms)"))
    assert len(caplog.records) == 2
    assert {r.levelno for r in caplog.records} == {logging.ERROR, logging.WARNING}


def test_stop_on_signals_sets_the_event() -> None:
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        stop = stop_on_signals("test")
        assert not stop.is_set()
        signal.raise_signal(signal.SIGTERM)
        assert stop.is_set()
        signal.raise_signal(signal.SIGTERM)  # a second one is harmless
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def test_every_registered_service_entry_is_a_run_function() -> None:
    import importlib

    for svc in services.REGISTRY:
        module, _, func = svc.entry.partition(":")
        assert callable(getattr(importlib.import_module(module), func)), svc


def test_the_router_keeps_its_last_end_offsets_while_a_broker_is_gone(caplog) -> None:
    """bench chaos found it: a broker killed under the router's watermark query killed the router."""
    from confluent_kafka import KafkaError, KafkaException

    from consumers.router_service import RouterService
    from tests.fakes import FakeConsumer, FakeProducer

    answers: list = [{0: 10}, KafkaException(KafkaError(KafkaError._DESTROY_BROKER)), {0: 12}]

    def end_offsets():
        a = answers.pop(0)
        if isinstance(a, Exception):
            raise a
        return a

    from schemas.codec import RETRAIN_REQUEST

    svc = RouterService(load_settings(), consumer=FakeConsumer(), producer=FakeProducer(RETRAIN_REQUEST),
                        restore=False, planner=lambda *a: None, end_offsets=end_offsets)  # fmt: skip
    assert svc.end_offsets() == {0: 10}
    svc._ends_at = -1e9
    with caplog.at_level(logging.WARNING):
        assert svc.end_offsets() == {0: 10}  # the last known, and a warning
    assert "unavailable" in caplog.text
    svc._ends_at = -1e9
    assert svc.end_offsets() == {0: 12}


def test_tune_gc_sets_the_young_threshold_and_zero_leaves_it():
    before = gc.get_threshold()
    try:
        tune_gc(0)
        assert gc.get_threshold() == before
        tune_gc(50_000)
        assert gc.get_threshold() == (50_000, *before[1:])
    finally:
        gc.set_threshold(*before)
