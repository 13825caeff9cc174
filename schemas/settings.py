"""The one settings model of every process (env prefix ``DRIFT_``).

Build it once at start (:func:`load_settings`) and pass it down explicitly; nothing
deeper in the code reads the environment. Invalid values fail here, naming the
environment variable and what it accepts.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.errors import ConfigError
from schemas.topics import Topics

T = TypeVar("T")

SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DRIFT_", extra="forbid", validate_default=True)

    # --- Kafka -------------------------------------------------------------------------
    kafka_bootstrap: str = Field("127.0.0.1:9092", description="host:port[,host:port...]")
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    kafka_ssl_key_password: SecretStr | None = None
    topic_prefix: str = Field("drift", pattern=r"^[A-Za-z0-9._-]+$")
    events_partitions: int = Field(3, ge=1, le=1024)
    alerts_partitions: int = Field(3, ge=1, le=1024)
    other_partitions: int = Field(3, ge=1, le=1024)
    replication_factor: int | None = Field(
        None, ge=1, le=16,
        description="replicas of the topics driftwatch creates; unset: the cluster's default.replication.factor "
        "(1 on the local broker, 3 on `driftctl up --brokers 3`)",
    )
    retention_ms: int = Field(7 * 24 * 3600 * 1000, ge=60_000)

    # --- local broker (driftctl up) -----------------------------------------------------
    run_dir: Path = Path(".run")
    kafka_version: str = "3.9.1"
    broker_heap: str = "512m"

    # --- ClickHouse ---------------------------------------------------------------------
    clickhouse_dsn: SecretStr = Field(
        SecretStr(""),
        description="'' (embedded chdb under run_dir/clickhouse), chdb:PATH, or clickhouse://user:pass@host:8123/db",
    )

    # --- streams --------------------------------------------------------------------------
    app_id: str = Field("drift-streams", pattern=r"^[A-Za-z0-9._-]+$")
    worker_id: str = Field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    app_version: str = "0.1.0"
    detector: str = "adwin"
    adwin_delta: float = Field(1e-5, gt=0, lt=1, description="ADWIN confidence; small keeps false alarms under 1 per million")
    warmup_events: int = Field(100, ge=0, description="events per (slice, feature) before alerts may fire")
    cooldown_events: int = Field(500, ge=0, description="events per (slice, feature) after an alert before the next")
    confirm_events: int = Field(
        60, ge=0, description="values after a cut (ADWIN, chi-square) that must confirm the shift: longer bursts alert"
    )
    chi_square_alpha: float = Field(1e-6, gt=0, lt=1, description="per-check significance of the categorical test")
    cusum_arl: float = Field(
        1e7, gt=1, description="in-control average run length (values) of the missing / out-of-range CUSUMs"
    )
    error_arl: float = Field(
        1e6, gt=1, description="in-control average run length (values) of the prediction-error CUSUM, one per slice"
    )
    stats_every_events: int = Field(1000, ge=1)
    detection_config: Path | None = Field(
        None, description="YAML model config: per-feature detector overrides and users' own topics (streams/model_config.py)"
    )
    snapshot_every_events: int = Field(
        2000, ge=1, description="checkpoint (snapshots, then commit) at this many new events of a slice"
    )
    snapshot_every_seconds: float = Field(10.0, gt=0, description="checkpoint at least this often")
    evict_idle_seconds: float = Field(
        300.0, gt=0, description="drop an idle slice's detectors from memory after this long (snapshot kept)"
    )
    evict_idle_events: int = Field(
        1_000_000, ge=1, description="... or after this many events of the worker went to other slices"
    )
    streams_session_timeout_seconds: float = Field(
        10.0, ge=6, le=300, description="a crashed worker's partitions move to another one after this long"
    )
    kafka_session_timeout_seconds: float = Field(
        10.0, ge=6, le=300,
        description="router, retrain and sink: a killed process's partitions move on (or to its restart) after this long",
    )
    stream_batch_size: int = Field(5000, ge=1, description="most events the worker takes from Kafka at once")
    stream_batch_seconds: float = Field(0.2, gt=0, description="longest wait for a batch to fill")
    gc_young_threshold: int = Field(
        50_000, ge=0,
        description="allocations between CPython's young garbage collections in a service process (0: CPython's "
        "700); a batch holds its decoded events alive at once, and at 700 the collector re-walks them dozens of "
        "times a batch",
    )
    event_max_id_length: int = Field(
        256, ge=8, le=65_536,
        description="longest event_id, model, slice, model_version, feature name or category; longer: dead-lettered",
    )
    event_max_features: int = Field(
        1000, ge=1, le=100_000, description="most features (numeric + categorical) of one event; more: dead-lettered"
    )

    # --- sink ----------------------------------------------------------------------------
    sink_group: str = "drift-sink"
    sink_batch_size: int = Field(500, ge=1)
    sink_flush_seconds: float = Field(1.0, gt=0)

    # --- monitoring (query socket, metrics, logs, report) -------------------------------
    query_socket: Path | None = Field(
        None, description="Unix socket where the sink serves read-only SQL; default: <embedded data path>.sock"
    )
    query_timeout_seconds: float = Field(60.0, gt=0, le=3600, description="longest query over the socket")
    query_max_rows: int = Field(100_000, ge=1, le=10_000_000, description="rows one socket query returns at most")
    metrics_port: int = Field(
        9460, ge=0, le=65535, description="Prometheus port of the first service (streams); the others follow; 0 = off"
    )
    metrics_host: str = Field("127.0.0.1", description="address the metrics endpoints listen on (0.0.0.0: all)")
    kafka_stats_interval_ms: int = Field(
        5000, ge=0, le=3_600_000, description="librdkafka statistics (consumer lag) every N ms; 0 = off"
    )
    log_format: Literal["text", "json"] = Field("text", description="service logs: text, or JSON lines")
    progress: Literal["auto", "on", "off"] = Field("auto", description="progress bars: auto = only on a terminal")

    # --- policy router (consumers/router) -----------------------------------------------
    router_group: str = Field("drift-router", description="consumer group of the policy router")
    router_coalesce_seconds: float = Field(
        10.0, ge=0, le=86_400, description="collect alerts of one (model, slice) this long before a request"
    )
    router_min_post_alert_events: int = Field(
        200, ge=0, description="estimated events of the slice after the alert window before a request"
    )
    router_max_wait_seconds: float = Field(
        60.0, gt=0, le=7 * 86_400, description="a request goes out after this long even with fewer post-alert events"
    )
    router_cooldown_seconds: float = Field(
        600.0, ge=0, le=30 * 86_400, description="no new request for a (model, slice) this long after one"
    )
    router_max_in_flight: int = Field(2, ge=1, le=1000, description="budget: requests awaiting their result")
    router_in_flight_timeout_seconds: float = Field(
        1800.0, gt=0, description="a request without a result frees its budget slot after this long"
    )
    router_max_tier: Literal["ADAPTER", "MODULE", "FULL"] = Field(
        "MODULE", description="highest tier a request or an escalation may reach (FULL: allow automatic full retrains)"
    )
    router_max_escalations: int = Field(2, ge=0, le=2, description="escalations per original request on rejection")
    router_broad_fraction: float = Field(
        0.6, gt=0, le=1,
        description="share of a model's slices drifting together that makes one broad request at a broader tier",
    )
    router_broad_min_slices: int = Field(3, ge=2, description="... and at least this many slices")
    router_reference_events: int = Field(
        0, ge=0, description="snapshot: also this many events before the estimated drift onset (pre-drift data)"
    )
    router_snapshot_max_events: int = Field(50_000, ge=100, description="snapshot: most events per alert partition")
    router_other_partition_events: int = Field(
        2000, ge=0, description="snapshot: latest events of each partition without an alert (other-slices check)"
    )
    router_restore_events: int = Field(
        10_000, ge=0, description="on start, rebuild cooldowns and budget from this many latest requests/results per partition"
    )
    retrain_group: str = Field("drift-retrain", description="consumer group of the retrain workers (more workers, more parallel jobs)")
    retrain_max_job_seconds: float = Field(
        3600.0, ge=10, description="a job running longer counts as hung: the worker stops (its request is re-delivered)"
    )

    # --- retraining (retrain_jobs) ------------------------------------------------------
    registry_dir: Path = Field(
        default_factory=lambda data: Path(data.get("run_dir") or ".run") / "models",
        description="model registry root (versions, manifests, current pointers); default run_dir/models",
    )
    retrain_model_class: str = Field(
        "tabular", min_length=1, description="modular model: a registered key or a dotted path pkg.mod:Class"
    )
    retrain_seed: int = Field(7, ge=0, description="seed of splits, initialisation and batch order")
    retrain_metric: Literal["log_loss", "auc", "accuracy"] = Field(
        "log_loss", description="primary holdout metric of the validation gate"
    )
    retrain_holdout_share: float = Field(0.25, gt=0, lt=1, description="share of snapshot events held out")
    retrain_val_share: float = Field(0.2, gt=0, lt=1, description="share of training events for early stopping")
    retrain_lr: float = Field(3e-3, gt=0, le=1, description="learning rate of incremental updates (Adam)")
    retrain_bootstrap_lr: float = Field(1e-2, gt=0, le=1, description="learning rate of the initial fit")
    retrain_epochs: int = Field(60, ge=1, le=10_000, description="most epochs of an incremental update")
    retrain_bootstrap_epochs: int = Field(40, ge=1, le=10_000, description="most epochs of the initial fit")
    retrain_batch_size: int = Field(128, ge=1, le=65_536)
    retrain_patience: int = Field(5, ge=1, le=1000, description="epochs without validation gain before stopping")
    retrain_l2_prev: float = Field(1e-3, ge=0, description="L2 penalty toward the previous weights")
    retrain_min_gain: float = Field(0.01, ge=0, description="metric gain every affected slice must reach")
    retrain_tolerance: float = Field(0.01, ge=0, description="largest metric loss allowed on any other slice")
    retrain_min_slice_events: int = Field(20, ge=1, description="fewest holdout events an affected slice needs")
    retrain_latency_budget_ms: float = Field(50.0, gt=0, description="inference budget per batch")
    retrain_latency_batch: int = Field(256, ge=1, description="batch size of the latency check")
    retrain_threads: int = Field(1, ge=1, le=64, description="torch threads of a retrain job")
    retrain_bootstrap_events: int = Field(
        20_000, ge=100,
        description="a model with no version is first fitted on at most this many of the oldest retained "
        "events per partition, from before its first request's snapshot",
    )
    retrain_calibration_bins: int = Field(10, ge=2, le=100, description="gate: equal-width bins of the ECE")
    retrain_calibration_tolerance: float = Field(
        0.02, ge=0, description="gate: most the ECE of the affected slices may grow"
    )
    retrain_fairness_feature: str | None = Field(
        None, min_length=1, description="gate: a categorical feature whose groups' error-rate gap may not widen"
    )
    retrain_fairness_tolerance: float = Field(0.02, ge=0, description="gate: most that gap may widen")
    retrain_fairness_min_group_events: int = Field(
        20, ge=1, description="gate: a group needs this many holdout events to count in the gap"
    )
    retrain_module_evidence_share: float = Field(
        0.8, gt=0, le=1,
        description="update the fewest allowed modules carrying this share of the gradient evidence (1: all allowed)",
    )

    # --- triage (retrain_jobs/triage.py): is a data drift worth a training job? --------
    retrain_triage: bool = Field(True, description="score DATA_DRIFT/DATA_QUALITY requests before training; off: train all")
    retrain_triage_alpha: float = Field(
        0.001, gt=0, lt=0.5, description="one-sided Welch test: chance of a training job for a harmless drift"
    )
    retrain_triage_margin: float = Field(
        0.01, ge=0, description="log-loss increase per event below which a drift counts as harmless"
    )
    retrain_triage_min_events: int = Field(
        50, ge=5, description="labelled events needed before and after the onset; fewer: train (the gate judges)"
    )
    retrain_triage_reference_events: int = Field(
        10_000, ge=100, description="messages per partition read before the snapshot for the pre-onset loss"
    )

    # --- release: shadow, canary, watch (retrain_jobs/rollout*.py) ------------------------
    rollout_enabled: bool = Field(
        True, description="a gate-passed version is a CANDIDATE judged on live events (off: the job promotes it)"
    )
    rollout_group: str = Field("drift-rollout", description="consumer group of the rollout service")
    rollout_alpha: float = Field(
        0.05, gt=0, lt=1, description="false-promotion rate: P(promote a candidate no better than the incumbent)"
    )
    rollout_harm_alpha: float = Field(
        0.05, gt=0, lt=1, description="false-alarm rate of the harm tests (early shadow rejection, canary, watch)"
    )
    rollout_loss_clip: float = Field(
        3.0, gt=0, le=50, description="per-event log loss is clipped to [0, this] before the paired test"
    )
    rollout_min_improvement: float = Field(
        0.0, ge=0, description="mean per-event log-loss gain the candidate must prove (0: any gain)"
    )
    rollout_max_shadow_events: int = Field(
        3000, ge=10, description="paired labelled events after which an undecided candidate is REJECTED"
    )
    rollout_canary_fraction: float = Field(
        0.10, ge=0, le=1, description="share of the affected slices' events the candidate serves (0: no canary)"
    )
    rollout_canary_events: int = Field(
        500, ge=1, description="paired labelled events the canary lasts without a significant regression"
    )
    rollout_watch_events: int = Field(
        1000, ge=0, description="paired labelled events a promoted version is watched against its predecessor (0: off)"
    )
    rollout_watch_tolerance: float = Field(
        0.02, ge=0, description="mean per-event log-loss increase the watch tolerates before it rolls back"
    )
    rollout_restart_events: int = Field(
        50, ge=1, description="canary and watch harm tests restart every this many events (alpha split over the restarts)"
    )
    rollout_slice_hold_seconds: float = Field(
        6 * 3600.0, gt=0, description="the router keeps a candidate's slices busy at most this long for its rollout"
    )
    rollout_checkpoint_events: int = Field(
        500, ge=1, description="checkpoint an in-flight rollout at least every this many paired events"
    )
    rollout_reconcile_seconds: float = Field(
        5.0, gt=0, description="how often the service republishes registry pointers the models topic does not show"
    )

    @field_validator("kafka_bootstrap")
    @classmethod
    def _bootstrap_has_ports(cls, v: str) -> str:
        for part in v.split(","):
            host, sep, port = part.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {v!r}")
            if not 1 <= int(port) <= 65535:
                raise ValueError(f"port {port} of {part.strip()!r} is out of range 1-65535")
        return v

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _readable_file(cls, v: Path | None) -> Path | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"no such file: {v}")
        return v

    @model_validator(mode="after")
    def _ssl_pairs(self) -> Settings:
        if bool(self.kafka_ssl_certfile) != bool(self.kafka_ssl_keyfile):
            raise ValueError("a client certificate needs both DRIFT_KAFKA_SSL_CERTFILE and DRIFT_KAFKA_SSL_KEYFILE")
        if (self.kafka_ssl_cafile or self.kafka_ssl_certfile) and not self.kafka_security_protocol.endswith("SSL"):
            raise ValueError(
                f"DRIFT_KAFKA_SSL_* files are set but DRIFT_KAFKA_SECURITY_PROTOCOL is "
                f"{self.kafka_security_protocol}; use SSL or SASL_SSL"
            )
        return self

    @model_validator(mode="after")
    def _sasl_complete(self) -> Settings:
        sasl_complete = self.kafka_sasl_mechanism and self.kafka_sasl_username and self.kafka_sasl_password
        if self.kafka_security_protocol.startswith("SASL") and not sasl_complete:
            raise ValueError(
                "kafka_security_protocol SASL_* needs DRIFT_KAFKA_SASL_MECHANISM, "
                "DRIFT_KAFKA_SASL_USERNAME and DRIFT_KAFKA_SASL_PASSWORD"
            )
        return self

    # --- derived --------------------------------------------------------------------------
    @property
    def topics(self) -> Topics:
        return Topics(self.topic_prefix)

    @property
    def bootstrap_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rpartition(":")[2])

    @property
    def clickhouse_path(self) -> Path:
        return self.run_dir / "clickhouse"

    def confluent_config(self, **extra: Any) -> dict[str, Any]:
        """librdkafka properties for confluent-kafka clients, security included."""
        conf: dict[str, Any] = {
            "bootstrap.servers": self.kafka_bootstrap,
            "security.protocol": self.kafka_security_protocol.lower(),
        }
        if self.kafka_sasl_mechanism:
            conf["sasl.mechanism"] = self.kafka_sasl_mechanism
            conf["sasl.username"] = self.kafka_sasl_username
            conf["sasl.password"] = self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else ""
        for key, value in (
            ("ssl.ca.location", self.kafka_ssl_cafile),
            ("ssl.certificate.location", self.kafka_ssl_certfile),
            ("ssl.key.location", self.kafka_ssl_keyfile),
        ):
            if value:
                conf[key] = str(value)
        if self.kafka_ssl_key_password:
            conf["ssl.key.password"] = self.kafka_ssl_key_password.get_secret_value()
        conf.update(extra)
        return conf

    def producer_config(self, **extra: Any) -> dict[str, Any]:
        """Durable producer settings, explicit because client defaults differ."""
        defaults = {"acks": "all", "enable.idempotence": True, "linger.ms": 5, "compression.type": "lz4"}
        return self.confluent_config(**{**defaults, **extra})


def _env_name(loc: tuple[Any, ...]) -> str:
    field = str(loc[0]) if loc else "settings"
    return f"DRIFT_{field.upper()}"


def load_settings(**overrides: Any) -> Settings:
    """Read settings from the environment (plus overrides), failing with the key named."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            if err.get("type") == "default_factory_not_called":
                continue  # registry_dir's default waits for run_dir: a consequence of another error
            if not err.get("loc") and err.get("type") == "value_error":
                problems.append(str(err["msg"]).removeprefix("Value error, "))  # a cross-field check
                continue
            name = _env_name(err.get("loc", ())) if err.get("loc") else "settings"
            value = err.get("input")
            shown = "" if isinstance(value, dict) else f" (got {value!r})"
            problems.append(f"{name}: {str(err['msg']).removeprefix('Value error, ')}{shown}")
        raise ConfigError("invalid settings: " + "; ".join(problems)) from exc


def section(settings: Any, prefix: str, config_cls: type[T]) -> T:
    """A component's own config dataclass, each field read from the setting ``<prefix><field>``.

    Components take their slice of the settings, not the whole model (the gate, the rollout): a
    field without a setting keeps the dataclass default.
    """
    names = [f.name for f in dataclasses.fields(config_cls)]
    return config_cls(**{n: getattr(settings, prefix + n) for n in names if hasattr(settings, prefix + n)})
