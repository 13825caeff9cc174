"""The small retraining world both the selective-update and the evidence/gate tests start from.

One slice (s1) of four drifts; the model is bootstrapped on the pre-drift events, and the
post-drift events come split into train, validation and holdout (all seeded).
"""

from __future__ import annotations

from retrain_jobs.model import TabularModularModel
from retrain_jobs.scenario import RetrainScenario
from retrain_jobs.selective import TrainConfig, split_events, update
from schemas.settings import load_settings

SETTINGS = load_settings(retrain_bootstrap_epochs=8, retrain_epochs=25)
SC = RetrainScenario(n_slices=4, pre_events=500, post_events=500, drifted="s1", seed=11)


def bootstrapped_world() -> tuple[TabularModularModel, tuple[list, list, list]]:
    pre, post = SC.events()
    tr, va, _ = split_events(pre, 0.2, 0.2, 7)
    net = TabularModularModel.fit_new(tr + va, seed=7)
    update(net, list(net.module_map()), tr, va, TrainConfig.bootstrap(SETTINGS))
    return net, split_events(post, 0.3, 0.2, 7)
