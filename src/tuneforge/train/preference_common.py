"""What the TRL-based objectives (dpo, kto, orpo, reward, grpo) share.

- Data: prepared split rows (`messages` + `rejected` / `label` extras) back into TRL's
  conversational columns (`data/formats.py` has the converters).
- Arguments: `setup.training_arguments` builds the TrainingArguments once (schedule, eval,
  checkpoints, early stopping); its fields are copied into TRL's *Config subclass, so
  every objective reads `training.*` the same way.
- Trainer: each TRL trainer is combined with `TuneforgeTrainer` (atomic checkpoints under
  `.staging/` then renamed, bf16 autocast, tokens/s), by class composition rather than a
  copy of that logic.
- Reference model: for adapters the reference is the base with the adapter switched off
  (TRL's default is a frozen copy of the adapter; a fresh adapter is the base anyway, and
  switching it off skips the adapter matmuls); a full fine-tune gets one frozen copy.
- Run: model setup, callbacks, the train loop and the save are `train/setup.py` and
  `train/fit.py`'s, shared with sft.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..data.formats import to_kto, to_preference
from ..errors import TuneforgeError
from ..io import read_jsonl
from ..lm.load import load_model
from ..lm.template import prompt_messages
from ..recipe import TrainingConfig
from ..run import RunDir
from .fit import run_trainer, save_result
from .setup import (
    ModelSetup,
    is_peft,
    prepared_recipe,
    setup_model,
    standard_callbacks,
    training_arguments,
    training_source,
)
from .trainer import TuneforgeTrainer, checkpoint_to_resume


class ObjectiveDataError(TuneforgeError, ValueError):
    pass


# --------------------------------------------------------------------------- data


def _clean(msgs: list[dict]) -> list[dict]:
    """Only role/content: TRL's chat templating has no use for per-message weights."""
    return [{"role": m["role"], "content": m["content"]} for m in msgs]


def is_pair(row: dict) -> bool:
    """A prepared preference row (it carries the rejected answer).

    >>> is_pair({"messages": [], "rejected": []})
    True
    """
    return "rejected" in row


def preference_records(path: Path) -> list[dict]:
    """TRL conversational prompt/chosen/rejected rows of one prepared split (pairs only)."""
    out = []
    for row in read_jsonl(path) if path.is_file() else []:
        if not is_pair(row):
            continue
        p = to_preference(row)
        out.append({"prompt": _clean(p["prompt"]), "chosen": _clean(p["chosen"]), "rejected": _clean(p["rejected"])})
    return out


def kto_records(path: Path) -> list[dict]:
    """TRL conversational prompt/completion/label rows; a pair row gives one desirable and one undesirable row."""
    out = []
    for row in read_jsonl(path) if path.is_file() else []:
        if "label" in row:
            k = to_kto(row)
            out.append(
                {"prompt": _clean(k["prompt"]), "completion": _clean(k["completion"]), "label": bool(k["label"])}
            )
        elif is_pair(row):
            p = to_preference(row)
            out.append({"prompt": _clean(p["prompt"]), "completion": _clean(p["chosen"]), "label": True})
            out.append({"prompt": _clean(p["prompt"]), "completion": _clean(p["rejected"]), "label": False})
    return out


def prompt_records(path: Path) -> list[dict]:
    """GRPO rows: the conversation up to the last assistant turn as `prompt`, other fields (e.g. `expected`) kept."""
    out = []
    for row in read_jsonl(path) if path.is_file() else []:
        extra = {k: v for k, v in row.items() if k not in ("messages", "rejected", "label")}
        out.append({"prompt": _clean(prompt_messages(row["messages"])), **extra})
    return out


def dataset(records: list[dict]) -> Any:
    from datasets import Dataset

    return Dataset.from_list(records) if records else None


def require_rows(records: list[dict], run: RunDir, kind: str, what: str) -> list[dict]:
    if not records:
        raise ObjectiveDataError(
            f"{run.split_file('train')}: no {what} rows for objective.kind={kind} — give data.train a file of "
            f"{'prompt/chosen/rejected pairs (examples/demo/preference.jsonl)' if what == 'preference' else 'prompt/completion/label rows (examples/demo/kto.jsonl) or pairs'}"
        )
    return records


# --------------------------------------------------------------------------- arguments

PAIR_METRICS = (
    "rewards/chosen",
    "rewards/rejected",
    "rewards/accuracies",
    "rewards/margins",
    "logps/chosen",
    "logps/rejected",
    "logits/chosen",
    "logits/rejected",
)


def eval_metrics(*names: str) -> list[str]:
    """The validation metric names an objective logs (for training.early_stopping_metric checks).

    >>> eval_metrics("kl")
    ['eval_loss', 'eval_kl']
    """
    return ["eval_loss"] + [f"eval_{n}" for n in names]


def trl_config(
    config_cls: type,
    cfg: TrainingConfig,
    output_dir: Path,
    has_eval: bool,
    metrics: Iterable[str] | None = None,
    **extra: Any,
) -> Any:
    """TRL's *Config with exactly the TrainingArguments the SFT path builds, plus objective fields.

    TRL configs default to bf16=True and gradient checkpointing on; both are taken from
    the recipe instead (bf16 autocast is entered by TuneforgeTrainer where it pays).
    Only the keyword form of `training_arguments` is reused, so any change to it (early
    stopping metric, trackers) applies to these objectives too.
    """
    from transformers import TrainingArguments

    base = training_arguments(cfg, output_dir, has_eval, metrics)
    kwargs = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainingArguments) if f.init}
    kwargs.update(
        bf16=False,
        fp16=False,
        gradient_checkpointing=base.activation_checkpointing,
        # length grouping reads `input_ids`, which TRL's tokenised pair/prompt datasets do not have
        train_sampling_strategy="random",
    )
    kwargs.update(extra)
    return config_cls(**kwargs)


# --------------------------------------------------------------------------- model


def reference_model(setup: ModelSetup, model_cfg: Any) -> Any:
    """None for adapters (the trainer switches the adapter off); a frozen copy of the base for full/freeze."""
    if is_peft(setup.model):
        return None
    ref = load_model(setup.source.path, model_cfg.dtype, model_cfg.trust_remote_code)
    ref.eval().requires_grad_(False)
    return ref


def use_base_as_reference(trainer: Any) -> None:
    """Drop the frozen "ref" adapter copy TRL adds to a PeftModel: TRL then computes reference
    log-probs with the adapter disabled, i.e. from the base model (TRL's own path for a new adapter)."""
    model = trainer.model
    # prompt-learning adapters (prefix/prompt) cannot be deleted one by one in PEFT: they keep
    # TRL's reference copy of the initial virtual tokens
    if is_peft(model) and "ref" in model.peft_config and not model.active_peft_config.is_prompt_learning:
        model.delete_adapter("ref")
        model.set_adapter("default")


# --------------------------------------------------------------------------- trainer


class _TuneforgeTRLMixin:
    """Adapts TuneforgeTrainer's hooks to TRL trainers, whose batches and loss scaling differ."""

    def _count_tokens(self, inputs) -> None:
        # TRL batches: DPO/reward carry attention_mask; GRPO prompt_mask + completion_mask;
        # KTO per-part attention masks
        keys = (
            ["attention_mask"]
            if "attention_mask" in inputs
            else ["prompt_mask", "completion_mask", "prompt_attention_mask", "completion_attention_mask"]
        )
        n = sum(int(inputs[k].sum()) for k in keys if hasattr(inputs.get(k), "sum"))
        if self._t_first is None:
            self._t_first, self._tokens_at_first = time.perf_counter(), self.state.num_input_tokens_seen
        self.state.num_input_tokens_seen += n

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        try:
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        finally:
            # TuneforgeTrainer sets an instance value for its own loss; the TRL class attribute
            # (whether its loss is already scaled for gradient accumulation) must decide instead
            self.__dict__.pop("loss_is_scaled_for_ga", None)


_CLASSES: dict[type, type] = {}


def tuneforge_trainer_class(trl_cls: type) -> type:
    """`trl_cls` with TuneforgeTrainer's checkpointing, autocast and token counting in front of it."""
    if trl_cls not in _CLASSES:
        _CLASSES[trl_cls] = type(f"Tuneforge{trl_cls.__name__}", (_TuneforgeTRLMixin, TuneforgeTrainer, trl_cls), {})
    return _CLASSES[trl_cls]


def trainer_kwargs(
    run: RunDir,
    setup: Any,
    args: Any,
    cfg: TrainingConfig,
    train_recs: list[dict],
    eval_recs: list[dict],
    checkpoint: str | None,
    callbacks: list | None,
) -> dict[str, Any]:
    """The keyword arguments every TRL trainer of ours takes (model, data, callbacks, precision)."""
    return dict(
        model=setup.model,
        args=args,
        train_dataset=dataset(train_recs),
        eval_dataset=dataset(eval_recs),
        processing_class=setup.tokenizer,
        callbacks=standard_callbacks(run, cfg, checkpoint) + list(callbacks or []),
        autocast_bf16=setup.bf16,
        logits_at_labels_only=False,
    )


def train_policy(
    run: RunDir,
    resume: bool,
    callbacks: list | None,
    *,
    trl_cls: type,
    config_cls: type,
    records: Callable[[Path], list[dict]],
    what: str,
    config_extra: dict,
    metrics: Iterable[str],
    with_reference: bool = True,
) -> dict:
    """Train a causal-LM policy with a TRL preference trainer (dpo, kto, orpo)."""
    recipe = prepared_recipe(run)
    cfg = recipe.training
    train_recs = require_rows(records(run.split_file("train")), run, recipe.objective.kind, what)
    eval_recs = records(run.split_file("validation"))
    setup = setup_model(recipe.model, recipe.strategy, cfg, training_source(run, recipe.model))
    checkpoint = checkpoint_to_resume(run.checkpoints_dir, resume)
    args = trl_config(config_cls, cfg, run.checkpoints_dir, bool(eval_recs), metrics, **config_extra)
    kwargs = trainer_kwargs(run, setup, args, cfg, train_recs, eval_recs, checkpoint, callbacks)
    if with_reference:
        kwargs["ref_model"] = reference_model(setup, recipe.model)
    trainer = tuneforge_trainer_class(trl_cls)(**kwargs)
    use_base_as_reference(trainer)
    info = run_trainer(run, trainer, checkpoint, lambda t: save_result(run, setup.tokenizer, trainer=t))
    info.update(setup.info(), train_rows=len(train_recs))
    run.stage_finished("train", **info)
    return info
