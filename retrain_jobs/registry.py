"""Versioned model artifacts on disk; promotion and rollback are pointer swaps.

Layout under ``root`` (``settings.registry_dir``)::

    <model>/versions/<version>/manifest.json     model class, config + preprocessing, parent,
                              /modules/<name>.pt  request, snapshot, seeds, metrics, module hashes
    <model>/CURRENT                               the promoted version (one line)
    <model>/decisions/<request_id>.json           the RetrainResult of a finished job
    <model>/log.jsonl                             promotions and rollbacks, in order

A version directory is written complete into a temp dir and renamed into place (``os.replace``
of a directory is atomic and fails if the name is taken, which also allocates version numbers
between concurrent writers); ``CURRENT`` and decision files are replaced atomically the same
way. A reader therefore sees a whole version or none. Promotions take a per-model lock so a
compare-and-swap against the expected parent is safe between worker processes.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from schemas.errors import ConfigError, DriftError

if TYPE_CHECKING:  # torch is imported where tensors are read or written: the router reads
    import torch  # only pointers and manifests, and importing torch took it 20-60 s to restart
    from torch import nn

_NAME = re.compile(r"^[A-Za-z0-9._-]+$")


class RegistryError(DriftError):
    """A registry operation is impossible (unknown model or version, stale parent, ...)."""


def tensor_sha256(t: torch.Tensor) -> str:
    return hashlib.sha256(t.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def module_hashes(modules: Mapping[str, nn.Module]) -> dict[str, dict[str, str]]:
    """sha256 of every parameter and buffer tensor, per module."""
    return {
        name: {pname: tensor_sha256(t) for pname, t in m.state_dict().items()}
        for name, m in modules.items()
    }


def module_digest(per_tensor: Mapping[str, str]) -> str:
    h = hashlib.sha256()
    for k in sorted(per_tensor):
        h.update(f"{k}={per_tensor[k]};".encode())
    return h.hexdigest()


@dataclass
class Manifest:
    model: str
    version: str
    parent_version: str | None
    request_id: str | None
    model_class: str
    config: dict[str, Any]
    modules: dict[str, dict[str, Any]]  # name -> reads, serves, head, params, sha256
    snapshot: dict[str, Any] | None = None
    seeds: dict[str, int] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    tier: str | None = None
    modules_updated: list[str] = field(default_factory=list)
    result: dict[str, Any] | None = None  # the RetrainResult that promoted it
    created_at: int = 0

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True, default=str)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        return cls(**json.loads(text))


def _check_name(kind: str, name: str) -> str:
    if not _NAME.match(name or ""):
        raise ConfigError(f"{kind} {name!r}: use letters, digits, '.', '_' or '-'")
    return name


def write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _safe_file(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", lambda m: f"%{ord(m.group()):02x}", name)


class Registry:
    def __init__(self, root: Path | str):
        self.root = Path(root)

    # --- reading -----------------------------------------------------------------------
    def models(self) -> list[str]:
        if not self.root.exists():
            return []
        return sorted(p.name for p in self.root.iterdir() if (p / "versions").is_dir())

    def versions(self, model: str) -> list[Manifest]:
        vdir = self._dir(model) / "versions"
        if not vdir.exists():
            return []
        names = sorted((p.name for p in vdir.iterdir() if not p.name.startswith(".") and p.is_dir()),
                       key=lambda n: (len(n), n))  # v0002 < v0010 < v10000
        return [self.manifest(model, v) for v in names]

    def manifest(self, model: str, version: str) -> Manifest:
        path = self._dir(model) / "versions" / _check_name("version", version) / "manifest.json"
        if not path.exists():
            known = [p.name for p in (self._dir(model) / "versions").glob("v*")]
            raise RegistryError(f"model {model!r} has no version {version!r}; versions: {sorted(known) or 'none'}")
        return Manifest.from_json(path.read_text())

    def current_version(self, model: str) -> str | None:
        path = self._dir(model) / "CURRENT"
        return path.read_text().strip() or None if path.exists() else None

    def current(self, model: str) -> Manifest | None:
        v = self.current_version(model)
        return self.manifest(model, v) if v else None

    def load(self, model: str, version: str | None = None) -> tuple[nn.Module, Manifest]:
        """The model object of ``version`` (default: the current one) and its manifest."""
        version = version or self.current_version(model)
        if version is None:
            raise RegistryError(f"model {model!r} has no promoted version; train one with `driftctl train`")
        import torch

        from retrain_jobs.model import model_class

        manifest = self.manifest(model, version)
        net = model_class(manifest.model_class).from_config(manifest.config)
        mods = net.module_map()
        if set(mods) != set(manifest.modules):
            raise RegistryError(
                f"{model} {version}: manifest modules {sorted(manifest.modules)} do not match the model's "
                f"{sorted(mods)}"
            )
        vdir = self._dir(model) / "versions" / version / "modules"
        for name, m in mods.items():
            state = torch.load(vdir / f"{_safe_file(name)}.pt", map_location="cpu", weights_only=True)
            m.load_state_dict(state)
        got = {n: module_digest(h) for n, h in module_hashes(mods).items()}
        bad = sorted(n for n, d in got.items() if d != manifest.modules[n]["sha256"])
        if bad:
            raise RegistryError(f"{model} {version}: weights of {bad} do not match the manifest hashes")
        net.eval()
        return net, manifest

    def find_request(self, model: str, request_id: str) -> Manifest | None:
        """The newest version saved for ``request_id`` (a job that lost a promotion race saves again)."""
        return next((m for m in reversed(self.versions(model)) if m.request_id == request_id), None)

    def decision(self, model: str, request_id: str) -> dict[str, Any] | None:
        path = self._dir(model) / "decisions" / f"{_safe_file(request_id)}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def log(self, model: str) -> list[dict[str, Any]]:
        path = self._dir(model) / "log.jsonl"
        return [json.loads(line) for line in path.read_text().splitlines() if line] if path.exists() else []

    # --- writing -----------------------------------------------------------------------
    def save(
        self,
        model: str,
        net: nn.Module,
        *,
        parent_version: str | None,
        request_id: str | None = None,
        snapshot: dict[str, Any] | None = None,
        seeds: dict[str, int] | None = None,
        metrics: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        tier: str | None = None,
        modules_updated: list[str] | None = None,
        result: dict[str, Any] | None = None,
    ) -> Manifest:
        """Write a new version (not promoted) atomically and return its manifest."""
        import torch

        from retrain_jobs.model import class_path, count_params

        mdir = self._dir(model)
        (mdir / "versions").mkdir(parents=True, exist_ok=True)
        mods = net.module_map()
        specs = net.module_specs()
        hashes = module_hashes(mods)
        tmp = Path(tempfile.mkdtemp(dir=mdir / "versions", prefix=".tmp-"))
        try:
            (tmp / "modules").mkdir()
            for name, m in mods.items():
                buf = io.BytesIO()
                torch.save(m.state_dict(), buf)
                write_atomic(tmp / "modules" / f"{_safe_file(name)}.pt", buf.getvalue())
            manifest = Manifest(
                model=model,
                version="",
                parent_version=parent_version,
                request_id=request_id,
                model_class=class_path(type(net)),
                config=net.config(),
                modules={
                    n: {
                        **specs[n].to_dict(),
                        "params": count_params(mods, [n]),
                        "sha256": module_digest(hashes[n]),
                    }
                    for n in mods
                },
                snapshot=snapshot,
                seeds=dict(seeds or {}),
                metrics=dict(metrics or {}),
                settings=dict(settings or {}),
                tier=tier,
                modules_updated=list(modules_updated or []),
                result=result,
                created_at=int(time.time() * 1000),
            )
            for _ in range(1000):
                manifest.version = self._next_version(model)
                if result is not None:  # the promoting result names the version it made
                    manifest.result = {**result, "new_version": manifest.version,
                                       "artifact_uri": self.artifact_uri(model, manifest.version)}
                write_atomic(tmp / "manifest.json", manifest.to_json().encode())
                try:
                    os.rename(tmp, mdir / "versions" / manifest.version)  # fails when the name is taken
                    return manifest
                except OSError as exc:
                    if exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
                        raise
            raise RegistryError(f"could not allocate a version number for {model!r}")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise

    def promote(self, model: str, version: str, *, expect_current: str | None | object = ...) -> None:
        """Point CURRENT at ``version``; with ``expect_current`` only if CURRENT still is that."""
        self.manifest(model, version)  # must exist
        with self._lock(model):
            now = self.current_version(model)
            if expect_current is not ... and now != expect_current and now != version:
                raise RegistryError(
                    f"{model}: current version moved to {now!r} (expected {expect_current!r}); not promoting {version}"
                )
            if now == version:
                return
            write_atomic(self._dir(model) / "CURRENT", f"{version}\n".encode())
            self._append_log(model, {"action": "PROMOTED", "version": version, "previous": now})

    def rollback(self, model: str, to: str | None = None, *, expect_current: str | None | object = ...) -> tuple[str, str]:
        """Point CURRENT back at ``to`` (default: the current version's parent); (from, to).
        With ``expect_current`` only if CURRENT still is that (already at ``to``: nothing to do)."""
        with self._lock(model):
            now = self.current_version(model)
            if expect_current is not ... and now != expect_current:
                if to is not None and now == to:
                    return now, to
                raise RegistryError(f"{model}: current version is {now!r}, not {expect_current!r}; not rolling back")
            if now is None:
                raise RegistryError(f"model {model!r} has no current version to roll back")
            target = to or self.manifest(model, now).parent_version
            if target is None:
                raise RegistryError(f"{model} {now} has no parent version; name one with --to")
            self.manifest(model, target)
            write_atomic(self._dir(model) / "CURRENT", f"{target}\n".encode())
            self._append_log(model, {"action": "ROLLED_BACK", "version": target, "previous": now})
        return now, target

    def record_decision(self, model: str, request_id: str, result: Mapping[str, Any]) -> None:
        ddir = self._dir(model) / "decisions"
        ddir.mkdir(parents=True, exist_ok=True)
        write_atomic(ddir / f"{_safe_file(request_id)}.json", json.dumps(dict(result), sort_keys=True).encode())

    def artifact_uri(self, model: str, version: str) -> str:
        return (self._dir(model) / "versions" / version).resolve().as_uri()

    # --- internals -----------------------------------------------------------------------
    def _dir(self, model: str) -> Path:
        return self.root / _check_name("model", model)

    def _next_version(self, model: str) -> str:
        taken = [int(p.name[1:]) for p in (self._dir(model) / "versions").glob("v[0-9]*") if p.name[1:].isdigit()]
        return f"v{max(taken, default=0) + 1:04d}"

    @contextlib.contextmanager
    def _lock(self, model: str) -> Iterator[None]:
        mdir = self._dir(model)
        mdir.mkdir(parents=True, exist_ok=True)
        with open(mdir / ".lock", "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _append_log(self, model: str, entry: dict[str, Any]) -> None:
        line = json.dumps({**entry, "at": int(time.time() * 1000)}, sort_keys=True) + "\n"
        with open(self._dir(model) / "log.jsonl", "a") as f:
            f.write(line)
            f.flush()
            os.fsync(f.fileno())
