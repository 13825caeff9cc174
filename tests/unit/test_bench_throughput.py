"""The throughput benchmark's pure parts: the plain loop over a fake consumer, the side-by-side
summary, and which commit samples count once every worker of a group holds partitions."""

from __future__ import annotations

import pytest

from deploy.bench_baseline import drain
from deploy.throughput_report import complete_group_samples, format_summary, throughput_summary, worker_events
from runtime.kafka_groups import Sample
from schemas.codec import EVENT
from tests.fakes import FakeMessage


class BatchConsumer:
    """Hands out its messages in batches of ``consume``'s size, like confluent-kafka's consume()."""

    def __init__(self, messages):
        self.messages = list(messages)

    def consume(self, num_messages=1, timeout=-1):
        batch, self.messages = self.messages[:num_messages], self.messages[num_messages:]
        return batch


def event(i: int, slice_: str, amount: float | None) -> bytes:
    return EVENT.encode({"event_id": f"e{i}", "event_time": i, "model": "m", "slice": slice_,
                         "features": {"amount": amount, "latency_ms": 1.0}, "categorical": {}})  # fmt: skip


def test_the_plain_loop_updates_one_adwin_per_slice_and_feature_and_finds_a_plain_shift():
    values = [0.0] * 2000 + [10.0] * 2000
    msgs = [FakeMessage("t", 0, i, event(i, f"s{i % 2}", v if i % 7 else None)) for i, v in enumerate(values)]
    msgs.insert(5, FakeMessage("t", 0, -1, None, error="broker hiccup"))  # skipped, not counted
    result = drain(BatchConsumer(msgs), total=len(values), delta=1e-5, batch_size=500)
    assert result["events"] == 4000 and result["detectors"] == 4  # 2 slices x 2 features
    assert result["measured_events"] == 4000 - 499  # the clock starts after the first batch (499 events + the error)
    assert result["changes"] >= 2  # amount shifts by 10 in both slices
    assert result["events_per_second"] > 0 and result["cpu_seconds"] >= 0


def test_only_samples_from_the_complete_group_count():
    samples = [Sample(1.0, 0), Sample(2.0, 5000), Sample(3.0, 9000), Sample(4.0, 20_000)]
    assert complete_group_samples(samples, None) == []
    assert complete_group_samples(samples, 2.5) == [Sample(3.0, 9000), Sample(4.0, 20_000)]


def test_worker_events_reads_the_shutdown_line():
    line = "clean shutdown: checkpointed 3 live slices, committed {}; 161190 events, seconds {'total': 8.8}"
    assert worker_events("noise\n" + line) == 161190
    assert worker_events("no shutdown line") is None


def test_summary_has_the_ratio_the_scaling_and_a_row_each():
    plain = [{"events_per_second": 40_000.0, "events_per_cpu_second": 50_000.0},
             {"events_per_second": 60_000.0, "events_per_cpu_second": 70_000.0}]  # fmt: skip
    runs = {
        1: [{"events_per_second": 20_000.0, "committed_before_complete": 0, "events_per_cpu_second": 15_000.0}],
        2: [{"events_per_second": 30_000.0, "committed_before_complete": 4000,
             "worker_events": {"streams-1": 120, "streams-2": 80}}],
    }  # fmt: skip
    result = throughput_summary(plain, runs, events=200, slices=5, features=2)
    assert result["baseline_events_per_s"] == 50_000 and result["worker_events_per_s"] == 20_000
    assert result["ratio"] == pytest.approx(0.4) and result["scaling"]["2"] == pytest.approx(1.5)
    text = format_summary(result)
    assert "plain loop" in text and "0.40 of the plain loop" in text and "1.50x one worker" in text
    assert "120/80" in text and "4,000 events before" in text
    assert result["cpu_ratio"] == pytest.approx(0.25) and "15,000 events: 0.25" in text
    no_baseline = throughput_summary([], runs, events=200, slices=5, features=2)
    assert "ratio" not in no_baseline and "plain loop" not in format_summary(no_baseline)


def test_rounds_give_medians_and_the_scaling_of_each_round():
    plain = [{"events_per_second": v} for v in (40_000.0, 10_000.0, 50_000.0, 45_000.0)]
    one = [{"events_per_second": v, "committed_before_complete": 0} for v in (20_000.0, 5_000.0, 22_000.0)]
    two = [{"events_per_second": v, "committed_before_complete": 0} for v in (30_000.0, 9_000.0, 33_000.0)]
    result = throughput_summary(plain, {1: one, 2: two}, events=200, slices=5, features=2)
    assert result["rounds"] == 3 and result["baseline_events_per_s"] == 42_500
    assert result["workers_events_per_s"] == {"1": 20_000, "2": 30_000}
    assert result["scaling"]["2"] == pytest.approx(1.5)  # median of 1.5, 1.8, 1.5
    assert "cpu_ratio" not in result  # no CPU times measured
    assert "runs 20,000, 5,000, 22,000" in format_summary(result)


def test_the_sink_cost_is_the_median_of_each_round_s_loss():
    one = [{"events_per_second": v, "committed_before_complete": 0} for v in (20_000.0, 10_000.0, 30_000.0)]
    beside = [{"events_per_second": v, "sink_cpu_seconds": c} for v, c in ((18_000.0, 0.5), (5_000.0, 0.4), (28_500.0, 0.6))]
    result = throughput_summary([], {1: one}, beside, events=200, slices=5, features=2)
    # losses 10%, 50%, 5%: the median round, not the ratio of the medians (18,000 / 20,000)
    assert result["sink_cost"] == pytest.approx(0.10) and result["worker_with_sink_events_per_s"] == 18_000
    assert result["sink_cpu_seconds"] == 0.5 and len(result["runs"]["with_sink"]) == 3
    text = format_summary(result)
    assert "sink beside it" in text and "10% below the worker alone" in text and "0.5 CPU s" in text
    assert "sink_cost" not in throughput_summary([], {1: one}, events=200, slices=5, features=2)


def test_cpu_watch_measures_this_process_between_two_times():
    import os
    import time

    from deploy.bench_throughput import CpuWatch, process_cpu_seconds

    before = process_cpu_seconds(os.getpid())
    start = time.monotonic()
    watch = CpuWatch([os.getpid()], start, poll=0.01)
    busy_until = time.monotonic() + 0.3
    while time.monotonic() < busy_until:  # spend CPU, so the watch sees some
        sum(range(1000))
    watch.stop()
    assert before is not None and process_cpu_seconds(os.getpid()) > before
    assert watch.between(0.0, time.monotonic() - start) > 0
    assert process_cpu_seconds(2**22 + 12345) is None  # no such process
