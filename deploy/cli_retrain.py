"""``driftctl train``, ``driftctl models list|show|rollback``: the retraining commands."""

from __future__ import annotations

import argparse
import json
import math
import sys
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

from schemas.settings import Settings

T = TypeVar("T")


def _timed(settings: Settings, desc: str, total: int | None, fn: Callable[[], T]) -> T:
    """``fn()`` with a bar counting its seconds on a terminal: neither the snapshot read nor the
    training loop reports progress, so the bar shows the command is alive (and the timeout)."""
    from runtime.progress import progress

    with progress(settings, total=total, desc=desc, unit="s") as bar:
        if not bar.shown:
            return fn()
        box: dict[str, Any] = {}
        done = threading.Event()

        def work() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the calling thread
                box["error"] = exc
            finally:
                done.set()

        threading.Thread(target=work, name=desc, daemon=True).start()  # daemon: Ctrl-C still exits
        began = time.monotonic()
        while not done.wait(0.2):
            bar.to(int(time.monotonic() - began))
    if "error" in box:
        raise box["error"]
    return box["value"]


def cmd_train(settings: Settings, args: argparse.Namespace) -> int:
    """Fit the first version of a model on events of a topic, register and promote it."""
    from retrain_jobs.job import bootstrap
    from retrain_jobs.registry import Registry
    from retrain_jobs.snapshot import latest_ranges, read_snapshot

    topic = args.topic or settings.topics.events
    ranges = latest_ranges(settings, topic)
    if args.max_events and ranges:
        per = math.ceil(args.max_events / len(ranges))
        ranges = [{**r, "start_offset": max(r["start_offset"], r["end_offset"] - per)} for r in ranges]
    snapshot = {"topic": topic, "ranges": ranges, "slice_filter": [], "labelled_only": True}
    n_messages = sum(max(0, r["end_offset"] - r["start_offset"]) for r in ranges)
    _say(f"reading {n_messages} messages of {topic} ({len(ranges)} partitions, labelled events kept)")
    began = time.monotonic()
    events = _timed(settings, f"read {topic}", int(args.timeout),
                    lambda: read_snapshot(settings, snapshot, timeout=args.timeout))
    _say(f"read {len(events)} labelled events in {time.monotonic() - began:.1f} s; training every module of "
         f"{args.model} (at most {settings.retrain_bootstrap_epochs} epochs, early stopping)")
    registry = Registry(settings.registry_dir)
    manifest = _timed(settings, f"train {args.model}", None,
                      lambda: bootstrap(args.model, events, registry, settings, snapshot=snapshot,
                                        request_id=f"train:{uuid.uuid4().hex[:12]}"))
    m = manifest.metrics
    print(f"trained {args.model} {manifest.version} on {m['train_events'] + m['val_events']} labelled events "
          f"of {topic} ({m['epochs']} epochs, {m['train_seconds']:.1f} s); promoted")
    print(f"modules: {len(manifest.modules)}, parameters: {sum(x['params'] for x in manifest.modules.values())}")
    for s, v in sorted(m["holdout"].items()):
        print(f"  {s:<20} holdout {m['metric_name']} {v:.4f}")
    return 0


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _fmt_ms(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S")


def cmd_models(settings: Settings, args: argparse.Namespace) -> int:
    from retrain_jobs.registry import Registry
    from schemas.errors import ConfigError

    registry = Registry(settings.registry_dir)
    if args.action == "list":
        names = [args.name] if args.name else registry.models()
        if not names:
            print(f"no models in {settings.registry_dir}")
        for name in names:
            current = registry.current_version(name)
            for m in registry.versions(name):
                r = m.result or {}
                print(f"{'*' if m.version == current else ' '} {name} {m.version:<6} parent={m.parent_version or '-':<6} "
                      f"tier={m.tier or '-':<7} modules={len(m.modules_updated)}/{len(m.modules)} "
                      f"created={_fmt_ms(m.created_at)} request={m.request_id or '-'}"
                      + (f" {r['metric_name']} {r['metric_before']:.4f}->{r['metric_after']:.4f}" if r else ""))
        return 0
    if not args.name:
        raise ConfigError(f"{args.action} needs a model name; models: {', '.join(registry.models()) or 'none'}")
    if args.action == "show":
        manifest = registry.manifest(args.name, args.version) if args.version else registry.current(args.name)
        if manifest is None:
            print(f"model {args.name!r} has no current version", file=sys.stderr)
            return 1
        print(manifest.to_json())
        return 0
    # rollback
    old, new = registry.rollback(args.name, args.to)
    record = rollback_result(registry, args.name, old, new)
    print(f"{args.name}: rolled back {old} -> {new}", file=sys.stderr)
    if args.publish:
        _publish(settings, record)
    print(json.dumps(record))
    return 0


def rollback_result(registry: Any, model: str, old: str, new: str) -> dict[str, Any]:
    """A RetrainResult with decision ROLLED_BACK, so rollbacks land next to the jobs' results."""
    from retrain_jobs.result import retrain_result

    target = registry.manifest(model, new)
    request = {"request_id": f"rollback:{model}:{old}->{new}:{uuid.uuid4().hex[:8]}", "model": model,
               "tier": registry.manifest(model, old).tier or "FULL"}
    return retrain_result(
        request,
        new_version=new,
        parent_version=old,
        params_total=sum(int(x["params"]) for x in target.modules.values()),
        decision="ROLLED_BACK",
        reason=f"manual rollback from {old} to {new}",
        artifact_uri=registry.artifact_uri(model, new),
    )


def _publish(settings: Settings, record: dict[str, Any]) -> None:
    from confluent_kafka import Producer

    from schemas.codec import RETRAIN_RESULT
    from schemas.errors import InfraError

    producer = Producer(settings.producer_config())
    producer.produce(settings.topics.retrain_results, key=record["model"].encode(),
                     value=RETRAIN_RESULT.encode(record))
    if producer.flush(30):
        raise InfraError(f"rollback record not delivered to {settings.topics.retrain_results} within 30 s")


def register(sub: argparse._SubParsersAction) -> None:
    """Add this area's sub-commands to the driftctl parser."""
    t = sub.add_parser("train", help="fit the first version of a model on events of a topic and promote it")
    t.add_argument("--model", required=True, help="model name (events' `model` field)")
    g = t.add_mutually_exclusive_group()
    g.add_argument("--from-beginning", action="store_true", help="every retained event (the default)")
    g.add_argument("--max-events", type=int, help="only the most recent N events (split over partitions)")
    t.add_argument("--topic", help="events topic (default: the configured events topic)")
    t.add_argument("--timeout", type=float, default=120.0, help="seconds to read the range")
    t.set_defaults(fn=cmd_train)
    m = sub.add_parser("models", help="the model registry: list, show a manifest, roll back")
    m.add_argument("action", choices=("list", "show", "rollback"))
    m.add_argument("name", nargs="?", help="model name")
    m.add_argument("--version", help="show: this version instead of the current one")
    m.add_argument("--to", help="rollback: this version instead of the current one's parent")
    m.add_argument("--publish", action="store_true", help="rollback: also publish a ROLLED_BACK RetrainResult")
    m.set_defaults(fn=cmd_models)
