"""Group Relative Policy Optimisation (TRL's GRPOTrainer) against a reward.

For every prompt of the prepared data (the conversation up to its last assistant turn)
`objective.num_generations` completions are sampled (`max_new_tokens`, `temperature`);
each is scored by the trained reward model (`objective.reward_model`, a reward run) and/or
the built-in reward functions (`objective.reward_functions`, see train/rewards.py), and
the group-normalised advantage drives a clipped policy update. `objective.kl_coef` is the
weight of the KL penalty to the starting model (0 disables it; with an adapter the
reference is the adapter switched off). Rows may carry extra fields the reward functions
read, e.g. `expected` for `contains_expected`.
"""

from __future__ import annotations

from ..run import RunDir
from .fit import run_trainer, save_result
from .preference_common import (
    dataset,
    prompt_records,
    require_rows,
    trl_config,
    tuneforge_trainer_class,
    use_base_as_reference,
)
from .rewards import combined_reward
from .setup import prepared_recipe, setup_model, standard_callbacks, training_source
from .trainer import checkpoint_to_resume


def reward_means(log_history: list[dict]) -> tuple[float | None, float | None]:
    """(first, last) logged mean reward of the sampled completions.

    >>> reward_means([{"reward": 0.1}, {"loss": 1.0}, {"reward": 0.5}])
    (0.1, 0.5)
    """
    rewards = [h["reward"] for h in log_history if "reward" in h]
    return (rewards[0], rewards[-1]) if rewards else (None, None)


def train(run: RunDir, resume: bool = False, callbacks: list | None = None) -> dict:
    from trl import GRPOConfig, GRPOTrainer

    recipe = prepared_recipe(run)
    cfg, obj = recipe.training, recipe.objective
    # whole groups per generation batch: checked when the recipe loaded (Recipe.check)
    reward_funcs = combined_reward(obj.reward_model, obj.reward_functions)
    train_recs = require_rows(prompt_records(run.split_file("train")), run, "grpo", "prompt")
    setup = setup_model(recipe.model, recipe.strategy, cfg, training_source(run, recipe.model))
    checkpoint = checkpoint_to_resume(run.checkpoints_dir, resume)
    # no validation pass: evaluating GRPO means sampling every group again; the logged
    # rewards of the training groups are the progress signal (and `tuneforge evaluate` after)
    args = trl_config(
        GRPOConfig,
        cfg,
        run.checkpoints_dir,
        False,
        None,
        num_generations=obj.num_generations,
        max_completion_length=obj.max_new_tokens,
        temperature=obj.temperature,
        beta=obj.kl_coef,
        epsilon=obj.clip_range,
    )
    trainer = tuneforge_trainer_class(GRPOTrainer)(
        model=setup.model,
        reward_funcs=reward_funcs,
        args=args,
        train_dataset=dataset(train_recs),
        processing_class=setup.tokenizer,
        callbacks=standard_callbacks(run, cfg, checkpoint) + list(callbacks or []),
        autocast_bf16=setup.bf16,
        logits_at_labels_only=False,
    )
    use_base_as_reference(trainer)
    info = run_trainer(run, trainer, checkpoint, lambda t: save_result(run, setup.tokenizer, trainer=t))
    first, last = reward_means(trainer.state.log_history)
    info.update(
        setup.info(),
        train_rows=len(train_recs),
        reward_functions=[getattr(f, "__name__", type(f).__name__) for f in reward_funcs],
        reward_model=obj.reward_model,
        first_reward=first,
        last_reward=last,
    )
    run.stage_finished("train", **info)
    return info
