"""The release half of ``driftctl demo``: a candidate judged on live traffic while an application
serves through a :class:`~retrain_jobs.serving.ModelHandle`.

After the retrain job's CANDIDATE result the demo plays the application: it keeps producing
live labelled events of the story, scoring each with a handle that follows the models topic.
The rollout service shadows the candidate on them, gives it its canary share (the handle routes
those events to it) and promotes it; from then on the change reverts (the drifted slice is back
on its old concept), and the watch rolls the new version back by itself. Every stage the service
publishes is shown as it comes, and the handle's predictions are tallied by the stage the handle
was serving in and by version.

Pacing: the service scores events in batches, so traffic far ahead of it would let one batch
run shadow, canary and the start of the watch at once (no canary the handle could see, and a
watch on events of the lasting change). So the demo produces at most ``GATE`` events per slice
past the last stage change, then waits up to ``GATE_WAIT`` s for the next one before going on.
"""

from __future__ import annotations

import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from deploy.demo_story import RetrainStory
from retrain_jobs.serving import ModelHandle
from schemas.codec import EVENT, MODEL_UPDATE
from schemas.errors import SchemaError
from schemas.settings import Settings

CHUNK = 30  # live events per slice per round
PACE_SECONDS = 0.05  # between rounds
GATE = 90  # live events per slice past the last stage change before waiting for the next one
GATE_WAIT = 1.5  # seconds to wait at the gate
FINAL = ("REJECTED", "ROLLED_BACK")


def release_settings(settings: Settings) -> Settings:
    """The demo's rollout: a shorter canary and watch than the defaults (same tests, same error rates)."""
    return settings.model_copy(update={
        "rollout_canary_events": min(settings.rollout_canary_events, 300),
        "rollout_watch_events": min(settings.rollout_watch_events, 800),
    })  # fmt: skip


def _say(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class UpdateTail:
    """The models topic from given offsets, read by assignment, a poll at a time (no group)."""

    def __init__(self, settings: Settings, start: dict[int, int]):
        self.consumer = Consumer(settings.confluent_config(**{
            "group.id": f"demo-tail-{uuid.uuid4().hex[:8]}", "enable.auto.commit": False,
        }))  # fmt: skip
        topic = settings.topics.models
        self.consumer.assign([TopicPartition(topic, p, o) for p, o in start.items()])

    def poll(self) -> list[dict[str, Any]]:
        out = []
        while (msg := self.consumer.poll(0.05)) is not None:
            if msg.error() is None and msg.value() is not None:
                try:
                    out.append(MODEL_UPDATE.decode(msg.value()))
                except SchemaError:
                    continue
        return out

    def close(self) -> None:
        self.consumer.close()


@dataclass
class Release:
    """What the release phase saw: the stage changes and the handle's predictions."""

    updates: list[dict[str, Any]] = field(default_factory=list)
    served: Counter = field(default_factory=Counter)  # (stage seen, slice is drifted, version) -> events
    live_events: int = 0
    reverted_at: int | None = None  # live events per slice before the change reverted (None: it lasted)
    seconds: float = 0.0

    @property
    def stages(self) -> list[str]:
        return [u["stage"] for u in self.updates]

    @property
    def outcome(self) -> str | None:
        return next((s for s in reversed(self.stages) if s in (*FINAL, "PROMOTED")), None)


def show_update(u: dict[str, Any]) -> None:
    losses = ""
    if u.get("candidate_loss") is not None:
        losses = f", live log loss {u['candidate_loss']:.3f} vs {u['previous_version']}'s {u['incumbent_loss']:.3f}"
    share = f" {u['canary_fraction']:.0%} of {','.join(u['slices'])}" if u["stage"] == "CANARY" else ""
    evidence = f" on {u['events']} paired events" if u["events"] else ""
    _say(f"  {u['stage']:<11} {u['version']}{share} (current {u['current_version']}){evidence}{losses}")
    _say(f"              {u['reason']}")


def run_release(settings: Settings, story: RetrainStory, models_start: dict[int, int], timeout: float,
                candidate: str, rollback: bool = True) -> Release:  # fmt: skip
    """Produce live traffic scored by a handle until the candidate's rollout ends (or timeout).
    With ``rollback`` the change reverts once the candidate is promoted."""
    release, began = Release(), time.monotonic()
    tail = UpdateTail(settings, models_start)
    producer = Producer(settings.producer_config(**{"linger.ms": 5}))
    live, changed_at, stage, done, waited = 0, 0, "CANDIDATE", False, 0.0
    watch_end = None  # live events per slice by which the watch must have ended (no record when it passes)
    try:
        with ModelHandle(settings, story.model) as handle:
            handle.wait_ready(30)
            while not done and time.monotonic() - began < timeout and (watch_end is None or live < watch_end):
                for u in tail.poll():
                    if u["model"] != story.model or u["version"] != candidate:
                        continue  # e.g. the service republishing the bootstrap pointer
                    release.updates.append(u)
                    show_update(u)
                    stage, done, changed_at = u["stage"], u["stage"] in FINAL, live
                    if stage == "PROMOTED" and watch_end is None:
                        watch_end = live + settings.rollout_watch_events + GATE
                        if rollback:
                            release.reverted_at = live
                            _say(f"  ...and now the change in {','.join(story.drifted)} reverts (its old concept is "
                                 "back): the watch compares the promoted version with its predecessor")  # fmt: skip
                if done:
                    break
                if live - changed_at >= GATE and waited < GATE_WAIT:
                    producer.flush(5)
                    time.sleep(0.1)
                    waited += 0.1
                    continue
                waited = 0.0
                if live - changed_at >= GATE:
                    changed_at = live  # the service is slower than that: go on
                chunk = story.live_events(story.events_per_slice + live, CHUNK, reverted=release.reverted_at is not None)
                live += CHUNK
                serving = "CANARY" if handle.candidate_version else (
                    "PROMOTED" if handle.current_version == candidate else stage)  # fmt: skip
                for event, p in zip(chunk, handle.predict_many(chunk)):
                    release.served[serving, event["slice"] in story.drifted, p.version] += 1
                    producer.produce(settings.topics.events, key=event["slice"].encode(), value=EVENT.encode(event))
                producer.poll(0)
                release.live_events += len(chunk)
                time.sleep(PACE_SECONDS)
    finally:
        producer.flush(30)
        tail.close()
    release.seconds = time.monotonic() - began
    return release


def show_serving(release: Release, story: RetrainStory, candidate: str) -> None:
    """The handle's predictions per stage: which version served the drifted and the other slices."""
    _say(f"  the serving handle scored {release.live_events} live events:")
    seen = list(dict.fromkeys(s for s, _, _ in release.served))
    for stage in seen:
        parts = []
        for drifted in (True, False):
            counts = {v: n for (s, d, v), n in release.served.items() if s == stage and d == drifted}
            if counts:
                total = sum(counts.values())
                where = ",".join(story.drifted) if drifted else "other slices"
                by = ", ".join(f"{v} {n}" for v, n in sorted(counts.items()))
                share = f" ({counts.get(candidate, 0) / total:.0%} by {candidate})" if drifted else ""
                parts.append(f"{where}: {by}{share}")
        _say(f"    while {stage:<11} {'; '.join(parts)}")
