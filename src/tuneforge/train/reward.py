"""A reward model on preference pairs (TRL's RewardTrainer, Bradley-Terry loss).

The base becomes `AutoModelForSequenceClassification(num_labels=1)`: the LM body plus a
fresh scalar `score` head. With lora/dora the adapters and the whole score head
(PEFT modules_to_save) are trained; with full/freeze the weights themselves (the score
head always trains).

The result is the contract PPO and GRPO rely on: `<run>/model` is a plain, merged
sequence-classification model with its tokenizer and pad token, so
`AutoModelForSequenceClassification.from_pretrained("<run>/model")` gives one scalar per
sequence; `train/rewards.py` (`load_reward_fn`) scores prompt/completion pairs with it.
Pairwise accuracy on held-out pairs is reported by `tuneforge evaluate`.
"""

from __future__ import annotations

from typing import Any

from ..lm.load import load_pretrained, offline
from ..model.strategies import StrategyError, apply_freeze, check_targets, linear_module_names
from ..recipe import REWARD_STRATEGIES
from ..run import RunDir
from .fit import run_trainer, save_result
from .preference_common import (
    ObjectiveDataError,
    eval_metrics,
    preference_records,
    require_rows,
    trainer_kwargs,
    trl_config,
    tuneforge_trainer_class,
)
from .setup import prepared_recipe, setup_model, training_source
from .trainer import checkpoint_to_resume

SCORE_HEAD = "score"  # the seq-cls head of Llama-style models in transformers


def reward_model(model_cfg: Any, strategy_cfg: Any, path: str, pad_token_id: int) -> Any:
    """The seq-cls model with the recipe's strategy applied (score head trainable)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    offline()
    kind = strategy_cfg.kind
    if kind not in REWARD_STRATEGIES:
        raise StrategyError(
            f"strategy.kind={kind}: a reward model trains with one of {', '.join(REWARD_STRATEGIES)} "
            f"(its score head is a new full layer)"
        )
    model = load_pretrained(  # custom code only with the operator's opt-in; safetensors only
        AutoModelForSequenceClassification,
        path,
        model_cfg.trust_remote_code,
        num_labels=1,
        dtype=getattr(torch, model_cfg.dtype),
    )
    model.config.pad_token_id = pad_token_id  # seq-cls models read the score at the last non-pad token
    head = getattr(model, SCORE_HEAD, None)
    if head is None:
        raise ObjectiveDataError(
            f"{path}: the sequence-classification model has no '{SCORE_HEAD}' head — "
            f"this architecture is not supported as a reward model"
        )
    if kind in ("lora", "dora"):
        from peft import LoraConfig, get_peft_model

        targets = check_targets(model, strategy_cfg)
        if targets == "all-linear":
            targets = [n for n in linear_module_names(model) if n != SCORE_HEAD]
        cfg = LoraConfig(
            r=strategy_cfg.r,
            lora_alpha=strategy_cfg.alpha,
            lora_dropout=strategy_cfg.dropout,
            target_modules=targets,
            use_dora=kind == "dora",
            task_type="SEQ_CLS",
            modules_to_save=[SCORE_HEAD],
            bias="none",
        )
        return get_peft_model(model, cfg)
    if kind == "freeze":
        model = apply_freeze(model, strategy_cfg)
    else:
        model.requires_grad_(True)
    head.requires_grad_(True)
    return model


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    from trl import RewardConfig, RewardTrainer

    recipe = prepared_recipe(run)
    cfg = recipe.training
    train_recs = require_rows(preference_records(run.split_file("train")), run, "reward", "preference")
    eval_recs = preference_records(run.split_file("validation"))

    def load(path: str, tokenizer: Any, bf16: bool) -> tuple[Any, str]:
        # the score head and adapters are initialised randomly, after setup_model seeded
        return reward_model(recipe.model, recipe.strategy, path, tokenizer.pad_token_id), recipe.model.dtype

    setup = setup_model(recipe.model, recipe.strategy, cfg, training_source(run, recipe.model), load=load)
    checkpoint = checkpoint_to_resume(run.checkpoints_dir, resume)
    args = trl_config(
        RewardConfig,
        cfg,
        run.checkpoints_dir,
        bool(eval_recs),
        eval_metrics("accuracy", "margin", "mean_reward", "min_reward", "max_reward"),
        max_length=recipe.data.max_length,
    )
    kwargs = trainer_kwargs(run, setup, args, cfg, train_recs, eval_recs, checkpoint, callbacks)
    trainer = tuneforge_trainer_class(RewardTrainer)(**kwargs)

    def save(t: Any):
        # PPO/GRPO load <run>/model as a plain seq-cls model that reads its score at the last non-pad token
        t.model.config.pad_token_id = setup.tokenizer.pad_token_id
        return save_result(run, setup.tokenizer, trainer=t, merge=True)

    info = run_trainer(run, trainer, checkpoint, save)
    info.update(setup.info(), train_rows=len(train_recs))
    run.stage_finished("train", **info)
    return info
