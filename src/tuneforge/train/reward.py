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

from ..io import replace_dir, staging_dir
from ..lm.load import load_tokenizer, offline, set_threads
from ..model.device import use_bf16
from ..model.source import record_lineage
from ..model.sources import resolve
from ..model.strategies import StrategyError, apply_freeze, check_targets, linear_module_names, param_counts
from ..recipe import Recipe
from ..run import RunDir
from .preference_common import (
    ObjectiveDataError,
    dataset,
    eval_metrics,
    is_peft,
    preference_records,
    require_rows,
    run_trainer,
    standard_callbacks,
    start,
    trl_config,
    tuneforge_trainer_class,
)
from .trainer import checkpoint_to_resume

REWARD_STRATEGIES = ("lora", "dora", "full", "freeze")
SCORE_HEAD = "score"  # the seq-cls head of Llama-style models in transformers


def reward_model(recipe: Recipe, path: str, pad_token_id: int) -> Any:
    """The seq-cls model with the recipe's strategy applied (score head trainable)."""
    import torch
    from transformers import AutoModelForSequenceClassification

    offline()
    kind = recipe.strategy.kind
    if kind not in REWARD_STRATEGIES:
        raise StrategyError(
            f"strategy.kind={kind}: a reward model trains with one of {', '.join(REWARD_STRATEGIES)} "
            f"(its score head is a new full layer)"
        )
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=1, dtype=getattr(torch, recipe.model.dtype), trust_remote_code=recipe.model.trust_remote_code
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

        targets = check_targets(model, recipe.strategy)
        if targets == "all-linear":
            targets = [n for n in linear_module_names(model) if n != SCORE_HEAD]
        cfg = LoraConfig(
            r=recipe.strategy.r,
            lora_alpha=recipe.strategy.alpha,
            lora_dropout=recipe.strategy.dropout,
            target_modules=targets,
            use_dora=kind == "dora",
            task_type="SEQ_CLS",
            modules_to_save=[SCORE_HEAD],
            bias="none",
        )
        return get_peft_model(model, cfg)
    if kind == "freeze":
        model = apply_freeze(model, recipe.strategy)
    else:
        model.requires_grad_(True)
    head.requires_grad_(True)
    return model


def save_merged(trainer: Any, tokenizer: Any, run: RunDir) -> Any:
    """A plain seq-cls model (adapters merged) + tokenizer in run/model, written aside then renamed."""
    model = trainer.model
    if trainer.is_world_process_zero():  # under DDP every rank holds the same weights; one writes
        if is_peft(model):
            model = model.merge_and_unload()
        model.config.pad_token_id = tokenizer.pad_token_id
        tmp = staging_dir(run.model_dir)
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        replace_dir(tmp, run.model_dir)
    trainer.accelerator.wait_for_everyone()
    return run.model_dir


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    from transformers import set_seed
    from trl import RewardConfig, RewardTrainer

    recipe, cfg = start(run)
    train_recs = require_rows(preference_records(run.split_file("train")), run, "reward", "preference")
    eval_recs = preference_records(run.split_file("validation"))
    set_threads(cfg.threads)
    source = resolve(recipe.model.base, recipe.model.cache_dir)
    tokenizer = load_tokenizer(source.path, recipe.model.trust_remote_code)
    set_seed(cfg.seed)  # the score head and adapters are initialised randomly
    model = reward_model(recipe, source.path, tokenizer.pad_token_id)
    counts = param_counts(model)
    bf16 = use_bf16(cfg.precision)
    checkpoint = checkpoint_to_resume(run.checkpoints_dir, resume)
    args = trl_config(
        RewardConfig,
        cfg,
        run.checkpoints_dir,
        bool(eval_recs),
        eval_metrics("accuracy", "margin", "mean_reward", "min_reward", "max_reward"),
        max_length=recipe.data.max_length,
    )
    trainer = tuneforge_trainer_class(RewardTrainer)(
        model=model,
        args=args,
        train_dataset=dataset(train_recs),
        eval_dataset=dataset(eval_recs),
        processing_class=tokenizer,
        callbacks=standard_callbacks(run, cfg, checkpoint) + list(callbacks or []),
        autocast_bf16=bf16,
        logits_at_labels_only=False,
    )
    record_lineage(run, source)
    return run_trainer(
        run,
        trainer,
        checkpoint,
        lambda t: save_merged(t, tokenizer, run),
        extra={
            "strategy": recipe.strategy.kind,
            "params": counts,
            "train_rows": len(train_recs),
            "bf16_autocast": bf16,
            "base_weights_dtype": recipe.model.dtype,
        },
    )
