"""Registry: atomic versions, loader, promote / rollback pointer swaps, listing."""

from __future__ import annotations

import json
import os

import pytest
import torch

from retrain_jobs.model import TabularModularModel
from retrain_jobs.registry import Registry, RegistryError
from retrain_jobs.selective import predict

EVENTS = [
    {"event_id": f"e{i}", "event_time": i, "model": "m", "slice": "ab"[i % 2],
     "features": {"x": float(i % 7), "y": None if i % 5 == 0 else float(i)}, "categorical": {"c": "uv"[i % 3 == 0]},
     "label": i % 2}
    for i in range(40)
]


def net(seed=0):
    return TabularModularModel.fit_new(EVENTS, seed=seed)


def test_save_load_roundtrip_is_bit_identical(tmp_path):
    reg = Registry(tmp_path)
    a = net()
    m = reg.save("m", a, parent_version=None, request_id="r1", seeds={"torch": 0}, metrics={"x": 1})
    assert m.version == "v0001" and reg.current(m.model) is None  # saved, not promoted
    loaded, manifest = reg.load("m", "v0001")
    assert manifest.request_id == "r1" and manifest.model_class == "tabular"
    assert set(manifest.modules) == set(a.module_map())
    assert manifest.modules["adapter.a"]["serves"] == ["a"] and manifest.modules["encoder.x"]["reads"] == ["x"]
    assert (predict(loaded, EVENTS) == predict(a, EVENTS)).all()
    assert manifest.config["preprocessing"]["numeric"]["x"][0] == pytest.approx(sum(i % 7 for i in range(40)) / 40)


def test_writes_are_atomic_and_tampering_is_detected(tmp_path, monkeypatch):
    reg = Registry(tmp_path)
    reg.save("m", net(), parent_version=None)

    def boom(*a, **k):
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        reg.save("m", net(1), parent_version="v0001")
    monkeypatch.undo()
    assert [m.version for m in reg.versions("m")] == ["v0001"]
    assert os.listdir(tmp_path / "m" / "versions") == ["v0001"]  # no temp dir left behind
    pt = tmp_path / "m" / "versions" / "v0001" / "modules" / "trunk.pt"
    state = torch.load(pt, weights_only=True)
    state["skip.bias"] += 1
    torch.save(state, pt)
    with pytest.raises(RegistryError, match="do not match the manifest hashes"):
        reg.load("m", "v0001")


def test_promote_rollback_and_listing(tmp_path):
    reg = Registry(tmp_path)
    with pytest.raises(RegistryError, match="no promoted version"):
        reg.load("m")
    v1 = reg.save("m", net(0), parent_version=None).version
    reg.promote("m", v1)
    v2 = reg.save("m", net(1), parent_version=v1).version
    reg.promote("m", v2, expect_current=v1)
    assert reg.current_version("m") == "v0002" and reg.models() == ["m"]
    v3 = reg.save("m", net(2), parent_version=v1).version
    with pytest.raises(RegistryError, match="current version moved"):
        reg.promote("m", v3, expect_current=v1)  # stale parent: compare-and-swap refuses
    assert reg.rollback("m") == ("v0002", "v0001")
    assert reg.current_version("m") == "v0001"
    assert reg.rollback("m", to="v0003") == ("v0001", "v0003")
    with pytest.raises(RegistryError, match="no version 'v0009'"):
        reg.rollback("m", to="v0009")
    assert [e["action"] for e in reg.log("m")] == ["PROMOTED", "PROMOTED", "ROLLED_BACK", "ROLLED_BACK"]
    assert [m.version for m in reg.versions("m")] == ["v0001", "v0002", "v0003"]
    assert reg.load("m")[1].version == "v0003"
    assert (tmp_path / "m" / "CURRENT").read_text() == "v0003\n"
    reg.record_decision("m", "req/1", {"decision": "REJECTED"})
    assert reg.decision("m", "req/1") == {"decision": "REJECTED"} and reg.decision("m", "other") is None


def test_cli_models_list_show_rollback(tmp_path, capsys, monkeypatch):
    from deploy.cli import main

    monkeypatch.setenv("DRIFT_REGISTRY_DIR", str(tmp_path))
    reg = Registry(tmp_path)
    reg.promote("m", reg.save("m", net(0), parent_version=None).version)
    reg.promote("m", reg.save("m", net(1), parent_version="v0001", tier="ADAPTER").version)
    assert main(["models", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("  m v0001") and lines[1].startswith("* m v0002")
    assert main(["models", "show", "m"]) == 0
    assert json.loads(capsys.readouterr().out)["version"] == "v0002"
    assert main(["models", "rollback", "m"]) == 0
    record = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert record["decision"] == "ROLLED_BACK" and record["new_version"] == "v0001"
    assert reg.current_version("m") == "v0001"
    from schemas.codec import RETRAIN_RESULT

    assert RETRAIN_RESULT.decode(RETRAIN_RESULT.encode(record))["decision"] == "ROLLED_BACK"
    assert record["tier"] == "ADAPTER" and record["parent_version"] == "v0002" and record["slices"] == []
    assert main(["models", "rollback"]) == 2, "a missing name is a DriftError, not a SystemExit"
    assert "rollback needs a model name; models: m" in capsys.readouterr().err
