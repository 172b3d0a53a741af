"""The model of a stage: the training model (strategy applied to the base) and a trained run.

Custom modelling code (`auto_map`) runs only with the opt-in of whoever runs the command
(`trust_remote_code=True` here, the CLI's --trust-remote-code, or TUNEFORGE_TRUST_REMOTE_CODE=1;
see `lm.load.decide_remote_code`); a recipe's `model.trust_remote_code` never grants it.
"""

from __future__ import annotations

from typing import Any

from ..lm.load import load_adapter, load_model, load_tokenizer
from .source import run_source

# frozen base weights may be stored in bf16 for these adapters: autocast then has no per-step
# weight casts to do, and PEFT keeps the adapter weights in fp32. Not for prefix/prompt (their
# fp32 virtual embeddings meet the bf16 input embeddings outside autocast) nor full/freeze (the
# trained weights must stay fp32).
BF16_BASE_OK = ("lora", "dora", "ia3")


def load_for_training(
    model_cfg: Any,
    strategy_cfg: Any,
    path: str,
    bf16: bool = False,
    gradient_checkpointing: bool = False,
    *,
    trust_remote_code: bool | None = None,
) -> tuple[Any, str]:
    """(model with the strategy applied, how the base weights are stored) for training.

    `trust_remote_code`: the opt-in of whoever runs the command (None: the environment).

    >>> # model, base_dtype = load_for_training(recipe.model, recipe.strategy, source.path, bf16=True)
    """
    from .strategies import apply_strategy, is_adapter

    kind = strategy_cfg.kind
    asked = model_cfg.trust_remote_code  # named in a refusal, never a grant
    if kind == "qlora":
        from .quantize import compute_dtype, load_quantized_base

        base = load_quantized_base(
            path, strategy_cfg.quant_compute_dtype, asked, gradient_checkpointing, opt_in=trust_remote_code
        )
        base_dtype = f"nf4 (compute {compute_dtype(strategy_cfg.quant_compute_dtype)})"
    else:
        base_dtype = "bfloat16" if bf16 and kind in BF16_BASE_OK else model_cfg.dtype
        base = load_model(path, base_dtype, asked, opt_in=trust_remote_code)
    model = apply_strategy(base, strategy_cfg, tokenizer_path=path)
    if gradient_checkpointing and is_adapter(kind):
        # with a frozen embedding nothing before the first checkpointed block needs a gradient, and
        # re-entrant checkpointing then drops the adapters' gradients: make the inputs require grad
        model.enable_input_require_grads()
    return model, base_dtype


def load_trained(
    run: Any, quantized_base: bool = False, *, trust_remote_code: bool | None = None
) -> tuple[Any, Any, Any]:
    """(model, tokenizer, source) of a trained run: base + adapter, or the full model.

    The tokenizer comes from the run's result folder, so chat uses the training template.
    A QLoRA adapter goes onto the full-precision base (what a merged export ships, and
    what evaluation measures); `quantized_base=True` loads the 4-bit base it was trained
    on instead, to reproduce the training-time model exactly. `trust_remote_code`: the opt-in
    of whoever runs the command (None: the environment); the run's own recipe.yaml is not asked.
    """
    recipe = run.recipe()
    source = run_source(run)  # recorded once at training time: no second resolve or hash
    result = run.result_dir
    if not result.is_dir():
        raise FileNotFoundError(f"{run.path}: no trained model (adapter/ or model/) — run `tuneforge train {run.path}`")
    opt = {"opt_in": trust_remote_code}
    asked = recipe.model.trust_remote_code
    tokenizer = load_tokenizer(str(result), asked, **opt)
    if (result / "adapter_config.json").is_file():
        if quantized_base and recipe.strategy.kind == "qlora":
            from .quantize import load_quantized_base

            base = load_quantized_base(source.path, recipe.strategy.quant_compute_dtype, asked, **opt)
        else:
            base = load_model(source.path, recipe.model.dtype, asked, **opt)
        model = load_adapter(base, str(result))
    else:
        model = load_model(str(result), recipe.model.dtype, asked, **opt)
    model.eval()
    return model, tokenizer, source
