"""Direct Preference Optimisation (TRL's DPOTrainer) on prompt/chosen/rejected pairs.

The reference is the starting model: with an adapter, the same weights with the adapter
switched off (no second copy); with a full fine-tune, one frozen copy. Chain from an SFT
run (`model.base: runs/<sft-run>`) so the reference already knows the domain.
Validation metrics include eval_rewards/accuracies (chosen implicit reward > rejected),
a useful `training.early_stopping_metric`.
"""

from __future__ import annotations

from ..recipe import dpo_loss_types
from ..run import RunDir
from .preference_common import PAIR_METRICS, eval_metrics, preference_records, train_policy


# TRL 1.x DPOConfig.loss_type values
def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    from trl import DPOConfig, DPOTrainer

    recipe = run.require().recipe()
    obj = recipe.objective
    extra = dict(beta=obj.beta, loss_type=dpo_loss_types(obj.loss_type), max_length=recipe.data.max_length)
    return train_policy(
        run,
        resume,
        callbacks,
        trl_cls=DPOTrainer,
        config_cls=DPOConfig,
        records=preference_records,
        what="preference",
        config_extra=extra,
        metrics=eval_metrics(*PAIR_METRICS, "entropy", "mean_token_accuracy"),
    )
