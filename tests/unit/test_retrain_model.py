"""Reference modular model, preprocessing and the model-class registry."""

from __future__ import annotations

import math

import pytest
import torch

from retrain_jobs.features import PREDICTION, DataError, Preprocessor, binary_labels
from retrain_jobs.model import DEFAULT_ADAPTER, ModularModel, TabularModularModel, model_class
from schemas.errors import ConfigError, UnknownKeyError


def ev(i, s="a", x=1.0, dev="ios", label=1):
    return {"event_id": f"e{i}", "event_time": i, "model": "m", "slice": s,
            "features": {"x": x, "y": float(i)}, "categorical": {"dev": dev}, "label": label}


EVENTS = [ev(0, x=1.0), ev(1, x=3.0, dev="web", label=0), ev(2, "b", x=None), ev(3, "b", x=2.0, dev="ios")]


def test_preprocessing_standardises_flags_missing_and_unknown_categories():
    pre = Preprocessor.fit(EVENTS)
    assert pre.numeric["x"] == pytest.approx((2.0, (2 / 3) ** 0.5))
    assert pre.categorical["dev"] == ["ios", "web"]  # most frequent first
    assert pre.groups == {"dev": ["dev"], "x": ["x"], "y": ["y"]}
    out = pre.transform([ev(9, x=None, dev="android")])
    assert out["x"].tolist() == [[0.0, 1.0]]  # value 0, missing indicator 1
    assert out["dev"].tolist() == [[0.0, 0.0, 1.0]]  # unknown bucket
    again = Preprocessor.from_dict(pre.to_dict())
    assert torch.equal(again.transform(EVENTS)["x"], pre.transform(EVENTS)["x"])


def test_the_events_own_prediction_is_an_input_as_a_logit():
    events = [{**ev(i), "prediction": p} for i, p in enumerate((0.1, 0.5, 0.9, None))]
    pre = Preprocessor.fit(events)
    assert pre.prediction_logit and pre.groups[PREDICTION] == [PREDICTION]
    mean, std = pre.numeric[PREDICTION]
    assert mean == pytest.approx(0.0, abs=1e-9)  # logits of 0.1, 0.5, 0.9 are symmetric
    col = pre.transform(events)[PREDICTION]
    assert col[:, 0].tolist() == pytest.approx([-math.log(9) / std, 0.0, math.log(9) / std, 0.0], rel=1e-5)
    assert col[:, 1].tolist() == [0.0, 0.0, 0.0, 1.0]  # the event without a prediction
    assert Preprocessor.from_dict(pre.to_dict()).prediction_logit
    scores = Preprocessor.fit([{**ev(i), "prediction": float(i)} for i in range(3)])
    assert not scores.prediction_logit and scores.numeric[PREDICTION][0] == pytest.approx(1.0)
    assert PREDICTION not in Preprocessor.fit(EVENTS).numeric


def test_custom_groups_and_label_checks():
    pre = Preprocessor.fit(EVENTS, groups={"num": ["x", "y"]})
    assert pre.groups == {"num": ["x", "y"], "dev": ["dev"]}
    assert pre.transform(EVENTS)["num"].shape == (4, 4)
    with pytest.raises(ConfigError, match="unknown features"):
        Preprocessor.fit(EVENTS, groups={"g": ["nope"]})
    with pytest.raises(DataError, match="not 0 or 1"):
        binary_labels([{**ev(0), "label": 3}])


def test_modules_declare_reads_and_serves_and_cover_all_parameters():
    net = TabularModularModel.fit_new(EVENTS, seed=1)
    assert isinstance(net, ModularModel)
    mods, specs = net.module_map(), net.module_specs()
    assert set(mods) == {"encoder.dev", "encoder.x", "encoder.y", "trunk", DEFAULT_ADAPTER, "adapter.a", "adapter.b"}
    assert specs["encoder.x"].reads == ("x",) and specs["encoder.x"].serves == ("*",)
    assert specs["adapter.a"].serves == ("a",) and specs["adapter.a"].head
    assert not specs["trunk"].head
    assert sum(p.numel() for m in mods.values() for p in m.parameters()) == sum(p.numel() for p in net.parameters())


def test_forward_is_head_of_embed_and_unseen_slices_use_the_default_adapter():
    net = TabularModularModel.fit_new(EVENTS, seed=1)
    prep = net.prepare(EVENTS + [ev(5, "new")])
    with torch.no_grad():
        out = net(prep.inputs, prep.slices)
        emb = net.embed(prep.inputs)
        assert torch.equal(out[-1:], net.adapters[0](emb[-1:]).squeeze(1))
        assert torch.equal(out[:2], net.adapters[1](emb[:2]).squeeze(1))
    name = net.ensure_slice("new")
    assert name == "adapter.new" and net.module_specs()[name].serves == ("new",)
    with torch.no_grad():
        assert torch.equal(net(prep.inputs, prep.slices), out)  # copied from the default
    rebuilt = TabularModularModel.from_config(net.config())
    assert set(rebuilt.module_map()) == set(net.module_map())


def test_model_class_registry_by_key_and_dotted_path():
    assert model_class("tabular") is TabularModularModel
    assert model_class("retrain_jobs.model:TabularModularModel") is TabularModularModel
    assert model_class("retrain_jobs.model.TabularModularModel") is TabularModularModel
    with pytest.raises(UnknownKeyError, match="valid: tabular"):
        model_class("nope")
    with pytest.raises(ConfigError, match="not a modular model"):
        model_class("collections:OrderedDict")
    with pytest.raises(ConfigError, match="cannot import"):
        model_class("no_such_pkg.mod:X")
