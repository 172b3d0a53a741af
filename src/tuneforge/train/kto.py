"""Kahneman-Tversky Optimisation (TRL's KTOTrainer) on unpaired prompt/completion/label rows.

Pairs are accepted too (chosen → desirable, rejected → undesirable). KTO's KL estimate
pairs each prompt with another row's completion inside a batch, so training.batch_size
must be at least 2. The reference is the starting model, as in DPO.
"""

from __future__ import annotations

from ..run import RunDir
from .preference_common import PAIR_METRICS, eval_metrics, kto_records, train_policy


def kto_loss_type(value: str) -> str:
    """The recipe default 'sigmoid' (a DPO loss, which older recipes carry) means KTO's own loss
    (the recipe already allows only KTO's losses: `recipe.KtoObjective`).

    >>> kto_loss_type("sigmoid"), kto_loss_type("apo_zero_unpaired")
    ('kto', 'apo_zero_unpaired')
    """
    return "kto" if value == "sigmoid" else value


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    from trl import KTOConfig, KTOTrainer

    recipe = run.require().recipe()
    rows = kto_records(run.split_file("train"))
    desirable = sum(r["label"] for r in rows)
    undesirable = len(rows) - desirable
    # KTO's paper: weight the rarer side up so both sides carry equal total weight
    weights = {}
    if desirable and undesirable:
        weights = (
            {"desirable_weight": 1.0, "undesirable_weight": round(desirable / undesirable, 4)}
            if desirable >= undesirable
            else {"desirable_weight": round(undesirable / desirable, 4), "undesirable_weight": 1.0}
        )
    loss_type = kto_loss_type(recipe.objective.loss_type)
    extra = dict(beta=recipe.objective.beta, loss_type=loss_type, max_length=recipe.data.max_length, **weights)
    if loss_type == "kto":
        # TRL precomputes each row's KL completion from its neighbour in a fixed-order batch
        # (the prepared split is already shuffled, seeded)
        extra["train_sampling_strategy"] = "sequential"
    return train_policy(
        run,
        resume,
        callbacks,
        trl_cls=KTOTrainer,
        config_cls=KTOConfig,
        records=kto_records,
        what="kto",
        config_extra=extra,
        metrics=eval_metrics(*PAIR_METRICS, "kl", "entropy"),
    )
