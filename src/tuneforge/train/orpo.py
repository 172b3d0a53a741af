"""Odds Ratio Preference Optimisation (TRL's ORPOTrainer, in trl.experimental in TRL 1.x).

ORPO adds an odds-ratio preference term (weight objective.beta, the paper's λ) to the SFT
loss on the chosen answer, so it needs no reference model and no separate SFT run.
"""

from __future__ import annotations

import warnings

from ..run import RunDir
from .preference_common import PAIR_METRICS, eval_metrics, preference_records, train_policy


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # importing trl.experimental warns that the API may change
        from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    recipe = run.require().recipe()
    extra = dict(beta=recipe.objective.beta, max_length=recipe.data.max_length)
    return train_policy(
        run,
        resume,
        callbacks,
        trl_cls=ORPOTrainer,
        config_cls=ORPOConfig,
        records=preference_records,
        what="preference",
        config_extra=extra,
        with_reference=False,
        metrics=eval_metrics(*PAIR_METRICS, "nll_loss", "log_odds_ratio", "log_odds_chosen"),
    )
