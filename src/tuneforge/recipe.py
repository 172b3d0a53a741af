"""The recipe: one YAML file describes one run, one typed section per stage.

Unknown keys and wrong types are errors; every problem is reported at once with
its fix (the closest valid key for a typo). CLI overrides use dotted keys.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Annotated, Any, Literal, Optional, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator, model_validator

from . import config
from .errors import TuneforgeError
from .gates import parse_gates


class RecipeError(TuneforgeError, ValueError):
    """A recipe could not be used; `problems` lists every problem with its fix."""

    def __init__(self, problems: list[str], source: str = "recipe"):
        self.problems = problems
        self.source = source
        body = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{source}: {len(problems)} problem(s)\n{body}")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, validate_assignment=True)


class ModelConfig(_Section):
    base: str = Field(
        "smollm2-135m-instruct",
        description="Base model: built-in name, local HF folder, .gguf file, cached hub id, or a previous run directory.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="Dtype the base weights are loaded in (trainable weights stay float32)."
    )
    trust_remote_code: bool = Field(
        False,
        description="A request, never a grant: custom modelling code (auto_map) runs only when whoever runs the "
        "command passes --trust-remote-code (or TUNEFORGE_TRUST_REMOTE_CODE=1).",
    )
    cache_dir: Optional[str] = Field(
        None, description="Where GGUF models are converted to safetensors once (default ~/.cache/tuneforge/models)."
    )


# the row formats data/ loads and detects (one list: data/formats.py reads it from here)
DATA_FORMATS = (
    "messages",
    "alpaca",
    "sharegpt",
    "prompt_completion",
    "preference",
    "openai_preference",
    "kto",
    "classification",
    "text",
)


class SourceConfig(_Section):
    """One training source of a mixture (`data.train: [..]`)."""

    path: str = Field(..., description="Data file (JSONL, JSON, CSV or Parquet).")
    weight: Optional[float] = Field(
        None, gt=0, description="Row multiplier: 2 = every row twice, 0.5 = a seeded half (default 1)."
    )
    fraction: Optional[float] = Field(
        None, gt=0, le=1, description="Share of the mixed training split this source makes up (rows sampled to fit)."
    )
    format: Literal[("auto", *DATA_FORMATS)] = Field("auto", description="Row format of this source.")
    fields: dict[str, str] = Field(default_factory=dict, description="Column mapping {expected: yours} of this source.")

    @model_validator(mode="after")
    def _one_share(self) -> SourceConfig:
        if self.weight is not None and self.fraction is not None:
            raise ValueError(f"{self.path}: give weight or fraction, not both")
        return self


class ReplayConfig(_Section):
    """Self-distilled replay: the base model's own answers to general prompts, mixed into training."""

    enabled: Literal["auto", True, False] = Field(
        "auto", description="auto: on for SFT on chat data (not raw text or classification rows), off otherwise."
    )
    ratio: float = Field(0.25, gt=0, le=4, description="Replay rows per training row.")
    pool: Optional[str] = Field(
        None, description="File of general prompts (rows with a user turn); default: the pool shipped in the package."
    )
    max_new_tokens: int = Field(
        128, gt=0, description="Answer budget; answers that do not finish within it are left out, never cut."
    )
    cache_dir: Optional[str] = Field(
        None, description="Where base-model answers are cached per model (default ~/.cache/tuneforge/replay)."
    )


# the rule families of data/rules.py, in the order they apply (listed here so recipes are checked at load)
AUGMENT_RULES = ("reorder", "synonyms", "contractions", "typos", "punctuation", "casing", "filler", "email")


class AugmentConfig(_Section):
    """Paraphrase augmentation of the training split at prepare time."""

    n: int = Field(0, ge=0, le=16, description="New phrasings per training row (0 = off).")
    teacher: Optional[str] = Field(
        None,
        description="Model that rewrites the questions (built-in name, folder, .gguf); unset: the rule set "
        "(casing, typos, fillers, contractions, synonyms, e-mail wrapping; no model needed).",
    )
    rules: Optional[list[Literal[AUGMENT_RULES]]] = Field(
        None, description="Rule families of the rule set (default: all of them)."
    )


class AbstainConfig(_Section):
    """Refusal rows for questions about the domain that the data does not answer."""

    questions: Optional[str] = Field(
        None, description="File of such questions (rows with a user turn; a reply in the row is ignored)."
    )
    auto: int = Field(
        0, ge=0, description="Also generate this many such questions from the names in the training data."
    )
    replies: list[str] = Field(
        default_factory=lambda: [
            "I'm sorry, but I don't have information about that.",
            "I don't know — that isn't covered in the information I have.",
        ],
        min_length=1,
        description="Reply wordings (rotated): what the model says when the data does not answer a question.",
    )


class DataConfig(_Section):
    train: Union[str, list[Union[str, SourceConfig]]] = Field(
        "examples/demo/train.jsonl",
        description="Training data file (JSONL, JSON, CSV or Parquet), or a list of sources to mix "
        "(each a path or {path, weight | fraction, format, fields}).",
    )
    replay: ReplayConfig = Field(default_factory=ReplayConfig, description="Replay of the base model's own answers.")
    augment: AugmentConfig = Field(default_factory=AugmentConfig, description="Paraphrase augmentation.")
    abstain: AbstainConfig = Field(default_factory=AbstainConfig, description="'I don't know' rows.")
    validation_split: Literal["auto", "paraphrase", "random"] = Field(
        "auto",
        description="paraphrase: validation rows restate facts that stay in training (same answer, other "
        "wording), so validation loss measures generalisation; auto: paraphrase when rows share answers, else random.",
    )
    validation: Optional[str] = Field(None, description="Validation file; if unset, split off the training data.")
    test: Optional[str] = Field(None, description="Held-out test file; if unset, split off the training data.")
    format: Literal[("auto", *DATA_FORMATS)] = Field(
        "auto", description="Row format; 'auto' detects it from the keys of the rows."
    )
    fields: dict[str, str] = Field(
        default_factory=dict,
        description="Column mapping {expected: yours}, e.g. {prompt: question, completion: answer}.",
    )
    validation_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of training rows held out for validation."
    )
    test_fraction: float = Field(
        0.1, ge=0.0, lt=1.0, description="Share of training rows held out for test (no test file)."
    )
    seed: int = Field(42, description="Seed of the deterministic train/validation/test split.")
    max_length: int = Field(
        512, gt=8, description="Longest example in tokens; longer ones are dropped and counted, never cut."
    )
    train_on: Literal["assistant", "all"] = Field(
        "assistant", description="Which tokens carry loss: only assistant replies (default) or the whole conversation."
    )
    system_prompt: Optional[str] = Field(None, description="System message added to rows that have none.")
    on_error: Literal["drop", "fail"] = Field(
        "drop", description="Invalid rows: drop them (and report) or fail the run."
    )
    max_drop_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="Fail when more than this share of rows is invalid, even with on_error=drop."
    )
    unicode_form: Literal["NFC", "NFKC", "none"] = Field(
        "NFC",
        description="Unicode normalisation of message text (NFKC also folds ligatures, full-width, superscripts).",
    )
    strip_html: bool = Field(False, description="Remove HTML tags and unescape entities in message text.")
    min_chars: int = Field(0, ge=0, description="Drop rows whose messages hold fewer characters than this.")
    max_chars: Optional[int] = Field(None, gt=0, description="Drop rows whose messages hold more characters than this.")
    min_tokens: int = Field(0, ge=0, description="Drop rows shorter than this many tokens (after the chat template).")
    max_repeated_line_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="Drop rows where a message repeats more than this share of its lines."
    )
    max_char_run: int = Field(64, gt=1, description="Drop rows where one character repeats this many times in a row.")
    # 'report' by default: support data often holds contact details the model must learn (a
    # company's own phone or email), and the name heuristic is imprecise, so tuneforge never
    # rewrites training data unasked; the data card and a warning show what was found.
    pii: Literal["redact", "drop", "report", "off"] = Field(
        "report", description="Personal data: redact (typed placeholders), drop the row, only report it, or skip."
    )
    pii_types: list[Literal["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "SSN", "SECRET", "PERSON"]] = Field(
        default_factory=lambda: ["EMAIL", "PHONE", "CREDIT_CARD", "IBAN", "IP_ADDRESS", "SSN", "SECRET", "PERSON"],
        description="Entity types the pii policy acts on.",
    )
    pii_allow: list[str] = Field(
        default_factory=list, description="Strings never treated as PII (e.g. your support email)."
    )
    dedup: Literal["near", "exact", "off"] = Field(
        "near", description="Remove duplicate training rows: exact (normalised text) or also near-duplicates (MinHash)."
    )
    dedup_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Similarity (Jaccard of character 3-grams) at which rows are near-duplicates."
    )
    leak_check: bool = Field(True, description="Remove training rows that validation/test rows (near-)copy.")
    leak_threshold: float = Field(
        0.8, gt=0.0, le=1.0, description="Similarity at which a validation/test row counts as a leak."
    )
    plots: bool = Field(True, description="Render data-card plots (length histograms, label distribution).")
    stratify_by: Optional[str] = Field(
        None,
        description="Field (or dotted metadata key, e.g. metadata.topic) whose value shares the split keeps in every split.",
    )
    max_per_label: Optional[int] = Field(
        None,
        gt=0,
        description="Cap training rows per value of data.stratify_by (seeded sample; the rest dropped and counted).",
    )
    balance: Literal["off", "upsample"] = Field(
        "off",
        description="upsample: repeat training rows of rarer data.stratify_by values until all are as common as the most common.",
    )
    estimate_time: bool = Field(
        False,
        description="Measure 2 training steps of the model while preparing and put the training-time estimate in the data card.",
    )

    def sources(self) -> list[SourceConfig]:
        """`train` as a list of sources (a plain path is one source with the section's format/fields).

        >>> [s.path for s in DataConfig(train=["a.jsonl", {"path": "b.jsonl", "fraction": 0.2}]).sources()]
        ['a.jsonl', 'b.jsonl']
        """
        items = [self.train] if isinstance(self.train, str) else self.train
        return [
            SourceConfig(path=i, format=self.format, fields=dict(self.fields)) if isinstance(i, str) else i
            for i in items
        ]

    @field_validator("train")
    @classmethod
    def _mixture(cls, v: Any) -> Any:
        if isinstance(v, list):
            if not v:
                raise ValueError("empty list: give at least one training source")
            fr = [i.fraction for i in v if isinstance(i, SourceConfig) and i.fraction is not None]
            if sum(fr) > 1 + 1e-9 or (len(fr) == len(v) and abs(sum(fr) - 1) > 1e-6):
                raise ValueError(
                    f"fractions add up to {sum(fr):g}: they must total 1 when every source has one, "
                    "and less than 1 when some sources keep all their rows"
                )
        return v


# --------------------------------------------------------------------------- strategy: what is trained
# One class per kind (a discriminated union on `kind`): a key of another kind is an error that
# says which kinds have it, and `recipe explain` lists each key with the kinds it applies to.
STRATEGY_KIND_HELP = (
    "What is trained: lora / qlora (4-bit NF4 base) / dora adapters, full (all weights), freeze (only the "
    "last layers or named modules), prefix / prompt (virtual tokens), ia3 (learned rescaling)."
)
TARGETS_HELP = "Modules that get adapters: 'all-linear' or module names."


class LoraStrategy(_Section):
    kind: Literal["lora", "dora"] = Field("lora", description=STRATEGY_KIND_HELP)
    r: int = Field(16, gt=0, description="LoRA/QLoRA/DoRA rank.")
    alpha: int = Field(32, gt=0, description="LoRA alpha (scale = alpha / r).")
    dropout: float = Field(0.0, ge=0.0, lt=1.0, description="LoRA dropout.")
    target_modules: Union[Literal["all-linear"], list[str]] = Field("all-linear", description=TARGETS_HELP)
    layers: Optional[int] = Field(
        None,
        gt=0,
        description="Adapt only the last N transformer layers (null: all). Backward then stops below the "
        "lowest adapted layer: less work per token, at the cost of adapting fewer weights.",
    )


class QloraStrategy(LoraStrategy):
    kind: Literal["qlora"] = Field("qlora", description=STRATEGY_KIND_HELP)
    quant_compute_dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="qlora: dtype the 4-bit weights are dequantised to for matmuls (auto: bf16 where supported).",
    )


class IA3Strategy(_Section):
    kind: Literal["ia3"] = Field("ia3", description=STRATEGY_KIND_HELP)
    target_modules: Union[Literal["all-linear"], list[str]] = Field("all-linear", description=TARGETS_HELP)


class FullStrategy(_Section):
    kind: Literal["full"] = Field("full", description=STRATEGY_KIND_HELP)


class FreezeStrategy(_Section):
    kind: Literal["freeze"] = Field("freeze", description=STRATEGY_KIND_HELP)
    train_layers: Optional[int] = Field(
        2, gt=0, description="freeze: train only the last N transformer layers (with the final norm)."
    )
    trainable_modules: list[str] = Field(
        default_factory=list,
        description="freeze: names (substrings) of modules to train as well, e.g. [lm_head, embed_tokens].",
    )


class PrefixStrategy(_Section):
    kind: Literal["prefix"] = Field("prefix", description=STRATEGY_KIND_HELP)
    num_virtual_tokens: int = Field(16, gt=0, description="prefix/prompt: number of learned virtual tokens.")


class PromptStrategy(PrefixStrategy):
    kind: Literal["prompt"] = Field("prompt", description=STRATEGY_KIND_HELP)
    prompt_init_text: Optional[str] = Field(
        None, description="prompt: initialise the soft prompt from the embeddings of this text (random when unset)."
    )


StrategyConfig = Annotated[
    Union[LoraStrategy, QloraStrategy, IA3Strategy, FullStrategy, FreezeStrategy, PrefixStrategy, PromptStrategy],
    Field(discriminator="kind"),
]


# --------------------------------------------------------------------------- objective: what it is trained for
OBJECTIVE_KIND_HELP = (
    "What the model is trained for: sft (instruction tuning), pretrain (raw text, packed), dpo / kto / orpo "
    "(preferences), reward (a reward model on pairs), ppo / grpo (RL against a reward)."
)
# TRL's loss names (trl DPOConfig.loss_type / KTOConfig.loss_type of the locked version)
DPO_LOSSES = (
    "sigmoid",
    "hinge",
    "ipo",
    "exo_pair",
    "nca_pair",
    "robust",
    "bco_pair",
    "sppo_hard",
    "aot",
    "aot_unpaired",
    "apo_zero",
    "apo_down",
    "discopop",
    "sft",
    "sigmoid_norm",
)


def dpo_loss_types(value: str) -> list[str]:
    """`objective.loss_type` as TRL's list: one name, or several joined by commas (combined losses).

    >>> dpo_loss_types("sigmoid, sft")
    ['sigmoid', 'sft']
    >>> dpo_loss_types("sigmod")
    Traceback (most recent call last):
    ...
    ValueError: 'sigmod' is not a DPO loss — use one of sigmoid, hinge, ... (or several joined by commas)
    """
    names = [v.strip() for v in value.split(",") if v.strip()]
    if not names or any(n not in DPO_LOSSES for n in names):
        raise ValueError(
            f"{value!r} is not a DPO loss — use one of {', '.join(DPO_LOSSES)} (or several joined by commas)"
        )
    return names


class _Objective(_Section):
    pass


class SftObjective(_Objective):
    kind: Literal["sft"] = Field("sft", description=OBJECTIVE_KIND_HELP)


class PretrainObjective(_Objective):
    kind: Literal["pretrain"] = Field("pretrain", description=OBJECTIVE_KIND_HELP)
    block_size: int = Field(512, gt=8, description="pretrain: tokens per packed training block.")


class DpoObjective(_Objective):
    kind: Literal["dpo"] = Field("dpo", description=OBJECTIVE_KIND_HELP)
    beta: float = Field(0.1, gt=0, description="dpo/kto/orpo: strength of the preference term (TRL's beta).")
    loss_type: str = Field(
        "sigmoid", description="dpo: TRL loss type (sigmoid, ipo, hinge, ...; several joined by commas)."
    )

    @field_validator("loss_type")
    @classmethod
    def _loss(cls, v: str) -> str:
        dpo_loss_types(v)
        return v


class KtoObjective(_Objective):
    kind: Literal["kto"] = Field("kto", description=OBJECTIVE_KIND_HELP)
    beta: float = Field(0.1, gt=0, description="dpo/kto/orpo: strength of the preference term (TRL's beta).")
    # 'sigmoid' (the DPO default, which older recipes carry) means KTO's own loss
    loss_type: Literal["kto", "apo_zero_unpaired", "sigmoid"] = Field("kto", description="kto: TRL's KTO loss type.")


class OrpoObjective(_Objective):
    kind: Literal["orpo"] = Field("orpo", description=OBJECTIVE_KIND_HELP)
    beta: float = Field(0.1, gt=0, description="dpo/kto/orpo: strength of the preference term (TRL's beta).")


class RewardObjective(_Objective):
    kind: Literal["reward"] = Field("reward", description=OBJECTIVE_KIND_HELP)


class _RLObjective(_Objective):
    reward_model: Optional[str] = Field(
        None, description="ppo/grpo: run directory of a trained reward model (objective.kind=reward)."
    )
    reward_functions: list[str] = Field(
        default_factory=list,
        description="ppo/grpo: built-in reward functions (e.g. contains_expected, brevity) used with or instead of reward_model.",
    )
    max_new_tokens: int = Field(48, gt=0, description="ppo/grpo: tokens sampled per rollout.")
    temperature: float = Field(1.0, gt=0, description="ppo/grpo: sampling temperature of rollouts.")
    kl_coef: float = Field(
        0.05,
        ge=0,
        description="ppo/grpo: weight of the per-token KL penalty to the frozen reference (grpo: 0 disables it).",
    )
    clip_range: float = Field(
        0.2, gt=0, description="ppo/grpo: clip range of the policy ratio (ppo: also of the value update)."
    )


class PpoObjective(_RLObjective):
    kind: Literal["ppo"] = Field("ppo", description=OBJECTIVE_KIND_HELP)
    vf_coef: float = Field(0.1, ge=0, description="ppo: weight of the value-head loss.")
    gamma: float = Field(1.0, gt=0, le=1, description="ppo: discount factor.")
    lam: float = Field(0.95, ge=0, le=1, description="ppo: GAE lambda.")
    ppo_epochs: int = Field(2, gt=0, description="ppo: optimisation passes over each rollout batch.")


class GrpoObjective(_RLObjective):
    kind: Literal["grpo"] = Field("grpo", description=OBJECTIVE_KIND_HELP)
    num_generations: int = Field(4, gt=1, description="grpo: completions sampled per prompt (the group).")


ObjectiveConfig = Annotated[
    Union[
        SftObjective,
        PretrainObjective,
        DpoObjective,
        KtoObjective,
        OrpoObjective,
        RewardObjective,
        PpoObjective,
        GrpoObjective,
    ],
    Field(discriminator="kind"),
]
DEFAULT_KIND = {"strategy": "lora", "objective": "sft"}
# strategies that learn virtual tokens (no weight deltas: nothing to merge, no packing)
PROMPT_LEARNING = ("prefix", "prompt")
REWARD_STRATEGIES = ("lora", "dora", "full", "freeze")  # a sequence-classification head + these
# training.kl_to_base: its base is the model with the adapter off (PEFT disable_adapter), so adapters only,
# and the objectives whose loss is tuneforge's own (TuneforgeTrainer), not a TRL trainer's
KL_TO_BASE_STRATEGIES = ("lora", "qlora", "dora", "ia3", "prefix", "prompt")
KL_TO_BASE_OBJECTIVES = ("sft", "pretrain")


class TrainingConfig(_Section):
    epochs: float = Field(3, gt=0, description="Passes over the training data.")
    max_steps: int = Field(-1, description="Stop after this many optimiser steps (-1: use epochs).")
    batch_size: int = Field(8, gt=0, description="Examples per device per step.")
    gradient_accumulation: int = Field(1, gt=0, description="Micro-batches per optimiser step.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate of AdamW.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay.")
    scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule after warmup."
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Share of steps spent warming up the learning rate.")
    max_grad_norm: float = Field(1.0, gt=0, description="Gradient clipping norm.")
    seed: int = Field(42, description="Seed for initialisation, dropout and data order.")
    logging_steps: int = Field(5, gt=0, description="Log training loss every N steps.")
    eval_strategy: Literal["epoch", "steps", "no"] = Field("epoch", description="When to compute validation loss.")
    eval_steps: int = Field(50, gt=0, description="Validation interval when eval_strategy=steps.")
    save_strategy: Literal["epoch", "steps"] = Field("epoch", description="When to write a resumable checkpoint.")
    save_steps: int = Field(50, gt=0, description="Checkpoint interval when save_strategy=steps.")
    save_total_limit: int = Field(2, gt=0, description="Checkpoints kept (the best one is always kept).")
    early_stopping_patience: Optional[int] = Field(
        None, gt=0, description="Stop after N evaluations without validation-loss improvement (off when unset)."
    )
    precision: Literal["auto", "bf16", "fp32"] = Field(
        "auto",
        description="Matmul precision: 'auto' = bf16 autocast where the CPU/GPU has bf16 units, else fp32 "
        "(trainable weights always stay fp32).",
    )
    packing: Optional[bool] = Field(
        None,
        description="Padding-free batches: examples in one row, each attending only to itself (per-example "
        "causal attention, no block mask). Unset = on wherever it works (not with prefix/prompt tuning, not for "
        "models with sliding-window attention), so batches keep their random order and carry no padding.",
    )
    fused_ops: bool = Field(
        True,
        description="Hand-written backward for LoRA linears, RMSNorm and SwiGLU during training (fewer kernels "
        "and saved activations; checked against the model's own modules before use).",
    )
    logits_at_labels_only: bool = Field(
        True, description="Compute the LM head and loss only where a label is (prompt positions skip the vocab matmul)."
    )
    frozen_cache: bool = Field(
        True,
        description="Keep each example's hidden states below the lowest trained layer (adapters on the last N "
        "layers, freeze) and start there when the example comes again (later epochs, validation): the same "
        "numbers without the frozen layers' forward. Packed batches, one CPU process, no dropout in the frozen layers.",
    )
    group_by_length: bool = Field(True, description="Without packing: batch examples of similar length (less padding).")
    gradient_checkpointing: bool = Field(False, description="Recompute activations in backward to save memory.")
    kl_to_base: float = Field(
        0.0,
        ge=0,
        description="Weight β of a KL(tuned ‖ base) penalty on the trained tokens (forgetting control); the base "
        "is the same model with its adapter switched off (no second copy). Adapters with sft/pretrain only; 0 = off.",
    )
    threads: Optional[int] = Field(None, gt=0, description="torch CPU threads (default: all cores).")
    early_stopping_metric: str = Field(
        "eval_loss",
        description="Validation metric early stopping and the best checkpoint follow (e.g. eval_loss, "
        "eval_rewards/accuracies for dpo).",
    )
    greater_is_better: Optional[bool] = Field(
        None, description="Whether a larger early_stopping_metric is better (default: false for *loss, else true)."
    )
    tracking: list[Literal["tensorboard", "mlflow", "wandb"]] = Field(
        default_factory=lambda: ["tensorboard"], description="Experiment trackers (mlflow and wandb are opt-in)."
    )

    @field_validator("eval_strategy", mode="before")
    @classmethod
    def _yaml_no(cls, v: object) -> object:
        # YAML 1.1 reads a bare `no` as false; `eval_strategy: no` means the string here
        return "no" if v is False else v

    @field_validator("max_steps")
    @classmethod
    def _max_steps(cls, v: int) -> int:
        if v == 0 or v < -1:
            raise ValueError("must be -1 (use epochs) or a positive number of steps")
        return v


class ForgettingBudget(_Section):
    """Default gates against forgetting; a limit of null switches that one off."""

    regression_drop: Optional[float] = Field(
        0.02, ge=0, le=1, description="Largest allowed drop on the general regression prompts (0.02 = 2 points)."
    )
    hallucination_increase: Optional[float] = Field(
        0.0, ge=0, le=1, description="Largest allowed rise of the hallucination rate on unanswerable questions."
    )

    def gates(self) -> list[str]:
        """>>> ForgettingBudget().gates()
        ['regression.drop <= 0.02', 'unanswerable.hallucination_increase <= 0.0']
        """
        out = []
        if self.regression_drop is not None:
            out.append(f"regression.drop <= {self.regression_drop}")
        if self.hallucination_increase is not None:
            out.append(f"unanswerable.hallucination_increase <= {self.hallucination_increase}")
        return out


class EvaluationConfig(_Section):
    enabled: bool = Field(True, description="Run the evaluation stage in `tuneforge run`.")
    compare_base: bool = Field(True, description="Also evaluate the base model for a side-by-side comparison.")
    max_new_tokens: int = Field(48, gt=0, description="Generation budget per test question.")
    # 64, not 32: measured on the demo (104 test questions, AVX2 kernels) base 35.9 -> 26.0 s and tuned
    # 21.7 -> 18.2 s; rows that stop leave the batch, so a bigger batch no longer waits on stragglers
    batch_size: int = Field(
        64,
        gt=0,
        description="Questions generated together (left-padded; finished rows leave the batch, so bigger batches are cheaper per question).",
    )
    max_examples: Optional[int] = Field(None, gt=0, description="Evaluate at most this many test rows.")
    regression_suite: bool = Field(
        True,
        description="Check the shipped general suite (170+ prompts: facts, arithmetic, language, instructions) "
        "for regressions, in addition to regression_file.",
    )
    regression_file: Optional[str] = Field(
        None, description="Your own general prompts (with 'expected'); checked for regressions with the shipped suite."
    )
    unanswerable_file: Optional[str] = Field(
        None,
        description="Questions about your domain that the data does not answer: the model must say it does not "
        "know; reports the hallucination rate base vs tuned.",
    )
    budget: ForgettingBudget = Field(
        default_factory=ForgettingBudget,
        description="Forgetting budget: gates checked on every run that compares with the base model.",
    )
    safety_file: Optional[str] = Field(
        None, description="Safety probes (rows with 'must_refuse'), e.g. examples/eval/safety.jsonl; refusal rates."
    )
    generalisation: bool = Field(
        True, description="Compare training phrasings with held-out paraphrases and check verbatim memorisation."
    )
    generalisation_examples: int = Field(32, gt=0, description="Training prompts re-asked for the generalisation gap.")
    paraphrase_file: Optional[str] = Field(
        None, description="Paraphrased prompts (with 'expected') for generalisation; default: the test split."
    )
    memorisation_ngram: int = Field(6, gt=1, description="Word n-gram length that counts as verbatim copying.")
    json_schema: Optional[str] = Field(
        None, description="JSON schema file the replies must satisfy; adds json_valid/schema_valid to task metrics."
    )
    gates: list[str] = Field(
        default_factory=list,
        description="Release gates 'METRIC OP VALUE', e.g. 'task.fact_accuracy >= 0.8'; unmet: run rejected.",
    )

    @field_validator("gates")
    @classmethod
    def _gates(cls, v: list[str]) -> list[str]:
        parse_gates(v)  # raises ValueError naming every bad gate and its fix
        return v


class ExportConfig(_Section):
    enabled: bool = Field(True, description="Run the export stage in `tuneforge run`.")
    merged: bool = Field(
        True, description="Write a merged full model under export/merged (false drops 'merged' from formats)."
    )
    golden_prompts: list[str] = Field(
        default_factory=list,
        description="Prompts whose greedy output must match after export (default: test questions).",
    )
    golden_count: int = Field(4, gt=0, description="Test questions used as golden prompts when none are given.")
    golden_max_new_tokens: int = Field(24, gt=0, description="Tokens compared per golden prompt.")
    formats: list[Literal["adapter", "merged", "gguf", "quantized"]] = Field(
        default_factory=lambda: ["adapter", "merged"],
        description="Artefacts to write: adapter (PEFT), merged (safetensors), gguf (+ Ollama Modelfile), quantized.",
    )
    gguf_types: list[Literal["f32", "f16", "bf16", "q8_0"]] = Field(
        default_factory=lambda: ["f16", "q8_0"],
        min_length=1,
        description="GGUF tensor types, one file each (f32/f16/bf16 checked exactly, q8_0 within tolerance).",
    )
    quantization: Literal["int8", "nf4", "torchao-int8"] = Field(
        "int8",
        description="Quantised export: bitsandbytes int8 or 4-bit nf4, or torchao int8 weight-only.",
    )


class Recipe(_Section):
    name: str = Field("demo", description="Run name; the run directory is <output_dir>/<name>.")
    output_dir: str = Field("runs", description="Folder that holds run directories.")
    registry_name: Optional[str] = Field(
        None, description="Model name in the registry this run is a version of (default: the run name)."
    )
    model: ModelConfig = Field(default_factory=ModelConfig, description="Stage 2: the base model.")
    data: DataConfig = Field(default_factory=DataConfig, description="Stage 1: data preparation.")
    strategy: StrategyConfig = Field(default_factory=LoraStrategy, description="What is trained.")
    objective: ObjectiveConfig = Field(default_factory=SftObjective, description="What it is trained for.")
    training: TrainingConfig = Field(default_factory=TrainingConfig, description="Stage 3-4: the training loop.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Stage 5: evaluation.")
    export: ExportConfig = Field(default_factory=ExportConfig, description="Stage 6: export.")

    @model_validator(mode="before")
    @classmethod
    def _default_kinds(cls, data: Any) -> Any:
        # a section without `kind` is the default kind (lora, sft), as before the union
        if isinstance(data, dict):
            for section, kind in DEFAULT_KIND.items():
                if isinstance(data.get(section), dict) and "kind" not in data[section]:
                    data = {**data, section: {"kind": kind, **data[section]}}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not v or "/" in v or v in (".", ".."):
            raise ValueError("must be a plain folder name (no '/')")
        return v

    def run_path(self) -> Path:
        return Path(self.output_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False, allow_unicode=True)

    def sha256(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def check(self) -> list[str]:
        """Every rule across sections, each a problem with its fix: run at load time, before any
        data or model is touched (kind-specific fields are already checked by the union)."""
        s, o, t, x = self.strategy, self.objective, self.training, self.export
        out = []
        if s.kind in PROMPT_LEARNING and t.packing:
            out.append(
                f"training.packing=true with strategy.kind={s.kind}: packed rows keep examples apart through "
                f"position-id restarts, which virtual tokens break — set training.packing=false (or leave it unset)"
            )
        if t.early_stopping_patience and not (
            t.eval_strategy != "no"
            and t.eval_strategy == t.save_strategy
            and (t.save_strategy == "epoch" or t.save_steps % t.eval_steps == 0)
        ):
            out.append(
                "training.early_stopping_patience needs training.eval_strategy (not 'no') equal to "
                "training.save_strategy, and save_steps a multiple of eval_steps — align them or unset the patience"
            )
        if o.kind == "kto" and t.batch_size < 2:
            out.append(
                "training.batch_size: KTO needs at least 2 rows per batch (its KL estimate pairs each prompt "
                "with another row's completion) — set training.batch_size=2 or more"
            )
        if o.kind == "reward" and s.kind not in REWARD_STRATEGIES:
            out.append(
                f"strategy.kind={s.kind}: a reward model trains with one of {', '.join(REWARD_STRATEGIES)} "
                f"(a score head on top of the model) — change strategy.kind"
            )
        if o.kind in ("ppo", "grpo") and not o.reward_model and not o.reward_functions:
            out.append(
                f"objective.kind={o.kind} has no reward: set objective.reward_model (a reward run directory) "
                f"and/or objective.reward_functions"
            )
        if o.kind == "ppo":
            if s.kind in PROMPT_LEARNING:
                out.append(
                    f"strategy.kind={s.kind} is not supported by objective ppo: virtual tokens shift the positions "
                    f"the value head and log-probs are read from — use lora, qlora, dora, ia3, freeze or full"
                )
            if t.gradient_checkpointing:
                out.append(
                    "training.gradient_checkpointing is not supported by objective ppo (its passes run in eval "
                    "mode, where HF checkpointing is off) — set it to false"
                )
            if t.early_stopping_patience:
                out.append(
                    "training.early_stopping_patience is not supported by objective ppo (there is no validation "
                    "loss; eval_reward is logged instead) — leave it unset"
                )
        if o.kind == "grpo" and (t.batch_size * t.gradient_accumulation) % o.num_generations:
            out.append(
                f"training.batch_size × gradient_accumulation = {t.batch_size * t.gradient_accumulation} "
                f"completions per generation batch must be a multiple of objective.num_generations="
                f"{o.num_generations} — e.g. training.batch_size={o.num_generations}"
            )
        formats = [f for f in x.formats if x.merged or f != "merged"]
        if x.enabled and o.kind != "reward" and not formats:
            out.append(
                "export.formats: nothing to export (empty, or only 'merged' with export.merged=false) — "
                "choose from adapter, merged, gguf, quantized, or set export.enabled=false"
            )
        elif x.enabled and s.kind in PROMPT_LEARNING and "adapter" not in formats:
            out.append(
                f"export.formats={formats}: a {s.kind}-tuning adapter cannot be merged into the weights — "
                f"add 'adapter' to export.formats (serve it with PEFT on the base model)"
            )
        if t.kl_to_base and s.kind not in KL_TO_BASE_STRATEGIES:
            out.append(
                f"training.kl_to_base={t.kl_to_base} with strategy.kind={s.kind}: the base it is measured against "
                f"is the model with its adapter switched off, and {s.kind} trains the weights themselves — use "
                f"one of {', '.join(KL_TO_BASE_STRATEGIES)}, or set training.kl_to_base=0"
            )
        if t.kl_to_base and o.kind not in KL_TO_BASE_OBJECTIVES:
            out.append(
                f"training.kl_to_base={t.kl_to_base} with objective.kind={o.kind}: the penalty is added to the "
                f"sft/pretrain loss only"
                + (
                    " (dpo/kto already hold the model to its reference: raise objective.beta instead)"
                    if o.kind in ("dpo", "kto")
                    else ""
                )
                + " — set training.kl_to_base=0"
            )
        if s.kind == "freeze" and s.train_layers is None and not s.trainable_modules:
            out.append(
                "strategy.kind=freeze trains nothing: set strategy.train_layers (last N layers) and/or "
                "strategy.trainable_modules"
            )
        return out


# --------------------------------------------------------------------------- loading


def parse_override(item: str) -> tuple[list[str], Any]:
    """Split `training.epochs=1` into (['training', 'epochs'], 1); values parse as YAML.

    >>> parse_override("training.epochs=1")
    (['training', 'epochs'], 1)
    """
    if "=" not in item:
        raise RecipeError([f"override {item!r}: expected KEY=VALUE, e.g. training.epochs=1"], "command line")
    key, raw = item.split("=", 1)
    value = yaml.safe_load(raw) if raw.strip() else ""
    return key.strip().split("."), value


def apply_overrides(data: dict, overrides: list[str]) -> dict:
    data = config.deep_copy(data)
    for item in overrides:
        keys, value = parse_override(item)
        problem = config.set_dotted(data, ".".join(keys), value)
        if problem:
            raise RecipeError([f"override {item!r}: {problem}"], "command line")
    return data


def recipe_from_dict(data: Any, source: str = "recipe") -> Recipe:
    """The recipe, validated field by field and then across sections (`Recipe.check`): every
    problem at once, before anything is run."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise RecipeError([f"top level: expected a mapping of sections, got {type(data).__name__}"], source)
    try:
        recipe = Recipe.model_validate(data)
    except ValidationError as exc:
        raise RecipeError(config.problems(Recipe, exc), source) from None
    problems = recipe.check()
    if problems:
        raise RecipeError(problems, source)
    return recipe


def drop_other_kinds(data: dict) -> dict:
    """A resolved recipe written before `strategy`/`objective` had one class per kind held every
    key of every kind: keep those of its own kind (the others never applied).

    >>> drop_other_kinds({"strategy": {"kind": "full", "r": 16}})
    {'strategy': {'kind': 'full'}}
    """
    data = dict(data)
    for name, default in DEFAULT_KIND.items():
        sec = data.get(name)
        if isinstance(sec, dict):
            cls = config.member_for(Recipe.model_fields[name].annotation, sec.get("kind", default))
            if cls is not None:
                data[name] = {k: v for k, v in sec.items() if k in cls.model_fields}
    return data


def load_recipe(path: str | Path | None = None, overrides: list[str] | None = None, resolved: bool = False) -> Recipe:
    """Load a YAML recipe (or the embedded defaults when `path` is None) and apply overrides.

    `resolved`: the file is a run directory's resolved recipe (see `drop_other_kinds`)."""
    data: Any = {}
    source = "defaults"
    if path is not None:
        source = str(path)
        data, problem = config.read_yaml(path)
        if problem:
            hint = " — pass the path of a recipe YAML (see recipes/)" if "not found" in problem else ""
            raise RecipeError([problem + hint], source)
        if resolved and isinstance(data, dict):
            data = drop_other_kinds(data)
    if overrides:
        data = apply_overrides(data or {}, overrides)
    return recipe_from_dict(data, source)


def kinds(kind_section: str) -> list[str]:
    """Every `kind` of the strategy or objective section.

    >>> kinds("objective")
    ['sft', 'pretrain', 'dpo', 'kto', 'orpo', 'reward', 'ppo', 'grpo']
    """
    return [k for m in config.union_members(Recipe.model_fields[kind_section].annotation) for k in config.kinds_of(m)]


def section(kind_section: str, **fields: Any) -> Any:
    """One strategy or objective section from keyword fields (the default kind when none is given).

    >>> section("strategy", kind="qlora").quant_compute_dtype, section("objective").kind
    ('auto', 'sft')
    """
    annotation = Recipe.model_fields[kind_section].annotation
    return TypeAdapter(annotation).validate_python({"kind": DEFAULT_KIND[kind_section], **fields})


def explain() -> list[tuple[str, str, str, str]]:
    """Every field as (dotted key, type, default, help); a key of some kinds only says which."""
    rows: list[tuple[str, str, str, str]] = []
    seen: dict[str, int] = {}

    def walk(cls: type[BaseModel], prefix: str, kinds: str = "") -> None:
        for name, f in cls.model_fields.items():
            members = config.union_members(f.annotation)
            if len(members) > 1:  # a section with one class per kind
                for m in members:
                    walk(m, f"{prefix}{name}.", "/".join(config.kinds_of(m)))
                continue
            if len(members) == 1 and members[0] is f.annotation:
                walk(members[0], f"{prefix}{name}.")
                continue
            key = prefix + name
            if key in seen:  # the same key in several kinds: one row naming them all
                k, typ, default, help_ = rows[seen[key]]
                if kinds and name != "kind":
                    rows[seen[key]] = (k, typ, default, help_.replace("]", f", {kinds}]", 1))
                continue
            ann = f.annotation
            default = f.default_factory() if f.default_factory else f.default
            typ = ann.__name__ if isinstance(ann, type) else str(ann).replace("typing.", "")
            help_ = f.description or ""
            if kinds and name != "kind":  # "[ppo, grpo] ..." replaces the description's own "ppo/grpo: "
                help_ = f"[{kinds}] " + re.sub(r"^[a-z0-9/]+: ", "", help_)
            elif name == "kind":
                default = DEFAULT_KIND.get(prefix.rstrip("."), default)
                typ = "one of " + ", ".join(
                    k
                    for m in config.union_members(Recipe.model_fields[prefix.rstrip(".")].annotation)
                    for k in config.kinds_of(m)
                )
            seen[key] = len(rows)
            rows.append((key, typ, json.dumps(default), help_))

    walk(Recipe, "")
    return rows
