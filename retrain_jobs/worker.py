"""The retrain worker: RetrainRequests in, RetrainResults out (``python -m deploy.services retrain``).

One confluent-kafka consumer group (``retrain_group``); more workers, more parallel jobs.
Requests are keyed by model and slices (:func:`consumers.router_requests.request_key`): the requests of
one slice (a request and its escalations) run in order on one partition, while different
slices of the same model spread over partitions and run in parallel. Two jobs of one model
may then race to promote; the loser redoes its update on the winner's version
(:func:`retrain_jobs.job.run_job`), so neither update is lost.

Per request: decode -> :func:`retrain_jobs.snapshot.read_snapshot` -> triage
(:func:`retrain_jobs.triage.triage_request`: a data drift that does not hurt ends SKIPPED here,
no job) -> :func:`retrain_jobs.job.run_job` -> publish the RetrainResult (key = model) and wait for the broker's ack -> commit the request's
offset. A crash anywhere before the ack publishes nothing and commits nothing, so the request is
delivered again and ``run_job`` (idempotent per request_id) decides the same.

- A bad request (undecodable, or the job raises a :class:`~schemas.errors.DriftError` or any
  other error) becomes a REJECTED result with cause ``JOB_FAILED``; the router does not
  escalate those. The worker goes on.
- An :class:`~schemas.errors.InfraError` or a retriable Kafka error (e.g. the snapshot cannot
  be read from Kafka) is transient: nothing is published, the same request is retried after an
  exponential backoff (up to 30 s), for as long as it takes.
- Long jobs run in a thread while the main loop keeps polling with the partitions paused, so
  ``max.poll.interval.ms`` never expires and rebalances are not held up by a job. A job running
  past ``retrain_max_job_seconds`` stops the worker (its request goes to another member).
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from retrain_jobs.result import retrain_result
from runtime import metrics
from runtime.kafka import pause_assignment, publish_and_wait, usable
from runtime.kafka_logs import kafka_log_config
from runtime.service import serve
from schemas.codec import RETRAIN_REQUEST, RETRAIN_RESULT
from schemas.errors import DriftError, InfraError
from schemas.retraining import TIERS, Cause
from schemas.settings import Settings

log = logging.getLogger(__name__)

POLL_SECONDS = 0.5
BACKOFF_START = 1.0
BACKOFF_MAX = 30.0
PUBLISH_TIMEOUT = 30.0

ReadSnapshot = Callable[[Settings, dict], list[dict]]
RunJob = Callable[[dict, list[dict], Any, Settings], dict]
Bootstrap = Callable[[Settings, dict, list[dict], Any, ReadSnapshot], None]
Triage = Callable[[Settings, dict, list[dict], Any, ReadSnapshot], tuple[Any, "dict | None"]]


def failed_result(request: dict[str, Any], reason: str, seconds: float = 0.0) -> dict[str, Any]:
    """A REJECTED RetrainResult for a request whose job could not run (the request may be partial)."""
    known = {
        "request_id": request.get("request_id") or "",
        "model": request.get("model") or "",
        "tier": request.get("tier") if request.get("tier") in TIERS else "ADAPTER",
        "slices": request.get("slices"),
    }
    return retrain_result(known, train_seconds=float(seconds), other_slices_max_regression=math.nan,
                          cause=Cause.JOB_FAILED.value, reason="job failed: " + reason)


def bootstrap_from_reference(settings: Settings, request: dict, events: list[dict], registry: Any,
                             read_snapshot: ReadSnapshot) -> None:
    """Fit a model's first version on the data from before its first request's drift.

    Users may ``driftctl train`` a model beforehand; when they did not, the first request finds
    no version. Its own snapshot (``events``) starts at the drift, so the reference comes from
    the oldest retained events instead (:func:`~retrain_jobs.snapshot.reference_snapshot`),
    and only those older than the drift's onset (:func:`~retrain_jobs.job.onset_time`): every
    partition is cut at the same event time, so the other slices' events from after the onset
    (some of those slices drifted too and are alerted later) do not teach the first version
    their new concept. With no labelled reference data, ``run_job`` falls back to
    bootstrapping on the snapshot itself.
    """
    from retrain_jobs.features import DataError
    from retrain_jobs.job import MIN_REFERENCE_EVENTS, bootstrap_for, labelled_events, onset_time
    from retrain_jobs.snapshot import reference_snapshot

    slices = request.get("slices") or request["snapshot"].get("slice_filter") or []
    onset = onset_time(labelled_events(events, request["model"]), slices)
    reference = reference_snapshot(settings, request["snapshot"], settings.retrain_bootstrap_events,
                                   before_event_time=onset)
    try:
        ref_events = labelled_events(read_snapshot(settings, reference), request["model"])
        if len(ref_events) < MIN_REFERENCE_EVENTS:  # a first version fitted on a handful would be promoted
            raise DataError(f"{len(ref_events)} labelled events before the onset, fewer than {MIN_REFERENCE_EVENTS}")
        bootstrap_for(request, ref_events, registry, settings, reference)
    except DataError as exc:
        log.info("no reference data to bootstrap %s from (%s); the job uses its snapshot", request["model"], exc)


class HungJobError(DriftError):
    """A job ran past retrain_max_job_seconds; its thread cannot be stopped, so the process ends."""


def transient(exc: BaseException) -> bool:
    """Errors worth retrying the same request for: our InfraError and retriable Kafka errors."""
    if isinstance(exc, InfraError):
        return True
    if isinstance(exc, KafkaException) and exc.args and hasattr(exc.args[0], "retriable"):
        return bool(exc.args[0].retriable())
    return False


@dataclass
class Job:
    """A request being worked on: where it came from and its running future."""

    topic: str
    partition: int
    offset: int
    request: dict[str, Any]
    started: float
    future: Future | None = None
    result: dict[str, Any] | None = None  # set once computed; kept until published


@dataclass
class WorkerStats:
    jobs: int = 0
    published: dict[str, int] = field(default_factory=dict)  # decision -> count
    failed: int = 0  # REJECTED because the job could not run
    retries: int = 0  # transient errors retried
    commit_failures: int = 0


class RetrainWorker:
    """The service. ``consumer``/``producer``/``read_snapshot``/``run_job``/``registry`` default to
    the real ones; tests pass small fakes with the same interfaces."""

    def __init__(
        self,
        settings: Settings,
        consumer: Any = None,
        producer: Any = None,
        read_snapshot: ReadSnapshot | None = None,
        run_job: RunJob | None = None,
        registry: Any = None,
        bootstrap: Bootstrap | None = None,
        triage: Triage | None = None,
    ):
        self.settings = settings
        self._consumer = consumer
        self.producer = producer if producer is not None else Producer(settings.producer_config(**kafka_log_config(log)))
        if bootstrap is None and run_job is None:  # with an injected job, the job decides alone
            bootstrap = bootstrap_from_reference  # (decided before run_job gets its default below)
            from retrain_jobs.triage import triage_request as triage
        if read_snapshot is None:
            from retrain_jobs.snapshot import read_snapshot
        if run_job is None:
            run_job = _run_job  # torch loads with the first job: a restarted worker rejoins its group at once
        if registry is None:
            from retrain_jobs.registry import Registry

            registry = Registry(settings.registry_dir)
        self.read_snapshot, self.run_job, self.registry, self.bootstrap = read_snapshot, run_job, registry, bootstrap
        self.triage = triage
        self.stats = WorkerStats()
        self.job: Job | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="retrain-job")
        self._retry_at: float | None = None
        self._backoff = 0.0

    # --- Kafka edge --------------------------------------------------------------------

    @property
    def consumer(self) -> Any:
        if self._consumer is None:
            self._consumer = Consumer(
                self.settings.confluent_config(
                    **{
                        "group.id": self.settings.retrain_group,
                        "client.id": f"drift-retrain-{self.settings.worker_id}",
                        "enable.auto.commit": False,  # commit only after the result is acknowledged
                        "auto.offset.reset": "earliest",
                        "session.timeout.ms": int(self.settings.kafka_session_timeout_seconds * 1000),
                        **kafka_log_config(log),  # repeated connection errors: once per interval
                    }
                )
            )
            self._consumer.subscribe([self.settings.topics.retrain_requests])
        return self._consumer

    def _pause(self, pause: bool) -> None:
        pause_assignment(self.consumer, pause, log)

    # --- one request -------------------------------------------------------------------

    def compute(self, request: dict[str, Any]) -> dict[str, Any]:
        """read_snapshot -> run_job; a job that cannot run gives a REJECTED result. InfraError propagates."""
        started = time.monotonic()
        try:
            events = self.read_snapshot(self.settings, request["snapshot"])
            if self.bootstrap is not None and self.registry.current(request["model"]) is None:
                self.bootstrap(self.settings, request, events, self.registry, self.read_snapshot)
            verdict, skipped = (None, None) if self.triage is None else self.triage(
                self.settings, request, events, self.registry, self.read_snapshot)
            if skipped is not None:  # a data drift that does not hurt: no training job
                return skipped
            result = self.run_job(request, events, self.registry, self.settings)
            if verdict is not None:  # the harm that started the job, beside the gate's numbers
                result = {**result, "checks": {**verdict.checks(), **(result.get("checks") or {})}}
            return result
        except Exception as exc:
            if transient(exc):
                raise
            log.exception("request %s failed", request.get("request_id"))
            return failed_result(request, f"{type(exc).__name__}: {exc}", time.monotonic() - started)

    def publish(self, result: dict[str, Any]) -> None:
        """Produce the result and wait for the ack; raises InfraError when it was not delivered."""
        problem = publish_and_wait(self.producer, [(
            self.settings.topics.retrain_results, (result["model"] or "").encode(), RETRAIN_RESULT.encode(result),
        )], PUBLISH_TIMEOUT)  # fmt: skip
        if problem:
            raise InfraError(f"RetrainResult {result['request_id']} not delivered: {problem}")

    def commit(self, job: Job) -> None:
        """Commit past the request; a failure (e.g. the partition moved meanwhile) only means the
        request comes again, and run_job returns the stored decision."""
        offsets = [TopicPartition(job.topic, job.partition, job.offset + 1)]
        try:
            done = self.consumer.commit(offsets=offsets, asynchronous=False) or []
            error = next((p.error for p in done if getattr(p, "error", None)), None)
        except KafkaException as exc:
            error = exc
        if error is not None:
            self.stats.commit_failures += 1
            log.warning("commit of %s[%d]@%d failed: %s", job.topic, job.partition, job.offset, error)

    # --- the loop ----------------------------------------------------------------------

    def step(self) -> None:
        """Poll (or keep the group alive while a job runs), then advance the current job."""
        if self.job is None:
            self._take(self.consumer.poll(POLL_SECONDS))
            return
        msg = self.consumer.poll(0 if self._job_ready() else POLL_SECONDS)
        if msg is not None and not msg.error():
            # delivered while busy (e.g. a new assignment is not paused): read it again later
            self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
            self._pause(True)
        self._advance()

    def _take(self, msg: Any) -> None:
        if not usable(msg, log):
            return
        job = Job(msg.topic(), msg.partition(), msg.offset(), {}, time.monotonic())
        try:
            job.request = RETRAIN_REQUEST.decode(msg.value() or b"")
        except DriftError as exc:
            key = (msg.key() or b"").decode("utf-8", errors="replace")
            where = f"{msg.topic()}[{msg.partition()}]@{msg.offset()}"
            log.warning("undecodable request at %s: %s", where, exc)
            job.request = {"request_id": f"undecodable:{where}", "model": key}
            job.result = failed_result(job.request, f"undecodable request at {where}: {exc}")
        self.job = job
        self.stats.jobs += 1
        self._pause(True)
        log.info("request %s: %s %s of %s on %s", job.request.get("request_id"), job.request.get("tier"),
                 job.request.get("modules"), job.request.get("model"), job.request.get("slices"))  # fmt: skip
        self._advance()  # starts the job

    def _job_ready(self) -> bool:
        job = self.job
        return job is not None and (job.result is not None or (job.future is not None and job.future.done()))

    def _advance(self) -> None:
        job = self.job
        if job is None:
            return
        if self._retry_at is not None and time.monotonic() < self._retry_at:
            return
        if job.result is None:
            if job.future is None:
                job.future = self._executor.submit(self.compute, job.request)
            if not job.future.done():
                if time.monotonic() - job.started > self.settings.retrain_max_job_seconds:
                    raise HungJobError(
                        f"request {job.request.get('request_id')} ran over {self.settings.retrain_max_job_seconds:.0f}s "
                        "(retrain_max_job_seconds); stopping so another worker takes it"
                    )
                return
            try:
                job.result = job.future.result()
            except (InfraError, KafkaException) as exc:  # only transient ones get here (see compute)
                job.future = None
                self._start_backoff(f"job of {job.request.get('request_id')}: {exc}")
                return
        try:
            self.publish(job.result)
        except (InfraError, KafkaException, BufferError) as exc:
            self._start_backoff(f"publishing {job.result['request_id']}: {exc}")
            return
        decision = job.result["decision"]
        metrics.observe_retrain_result(job.result)
        self.stats.published[decision] = self.stats.published.get(decision, 0) + 1
        if job.result.get("cause") == Cause.JOB_FAILED:
            self.stats.failed += 1
        log.info("result %s: %s (%s)", job.result["request_id"], decision, job.result["reason"])
        self.commit(job)
        self.job, self._retry_at, self._backoff = None, None, 0.0
        self._pause(False)

    def _start_backoff(self, what: str) -> None:
        self.stats.retries += 1
        self._backoff = min(BACKOFF_MAX, self._backoff * 2 or BACKOFF_START)
        self._retry_at = time.monotonic() + self._backoff
        log.warning("%s; retrying in %.1fs", what, self._backoff)

    def run(self, stop: threading.Event) -> WorkerStats:
        """Serve until ``stop`` is set; a running job is finished and published first."""
        log.info("retrain worker on %s (group %s)", self.settings.topics.retrain_requests, self.settings.retrain_group)
        try:
            while not stop.is_set() or (self.job is not None and self.job.future is not None):
                if stop.is_set() and self._retry_at is not None:
                    break  # transient failure while stopping: leave it to the re-delivery
                self.step()
        finally:
            self.close()
        return self.stats

    def close(self) -> None:
        running = self.job is not None and self.job.future is not None and not self.job.future.done()
        self._executor.shutdown(wait=not running)  # a hung job's thread is left to the process exit
        if self._consumer is not None:
            self._consumer.close()
            self._consumer = None
        log.info("retrain worker closed: %s", self.stats)


def _run_job(*args: Any, **kwargs: Any) -> Any:
    """retrain_jobs.job.run_job, imported on first use (importing torch took 20-50 s on a busy machine)."""
    from retrain_jobs.job import run_job

    return run_job(*args, **kwargs)


def run(settings: Settings) -> None:
    try:
        serve("retrain", lambda stop: RetrainWorker(settings).run(stop))
    except HungJobError as exc:
        log.error("%s", exc)
        logging.shutdown()
        os._exit(1)  # the job's thread cannot be interrupted; the request goes to another worker
