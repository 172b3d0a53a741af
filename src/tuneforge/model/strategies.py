"""What is trained (`strategy.kind`), validated against the model before any training.

full    all weights                       → run/model (full safetensors model)
freeze  last N decoder layers + final norm + named modules, the rest frozen → run/model
lora    low-rank adapters                 → run/adapter (PEFT)
qlora   lora on a 4-bit NF4 base (see model/quantize.py)   → run/adapter
dora    weight-decomposed lora            → run/adapter
ia3     learned rescaling vectors         → run/adapter
prefix  learned key/values per layer      → run/adapter (cannot be merged into weights)
prompt  learned input embeddings          → run/adapter (cannot be merged into weights)
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import TuneforgeError
from ..recipe import PROMPT_LEARNING, StrategyConfig  # virtual-token adapters: no weight deltas

ADAPTERS = ("lora", "qlora", "dora", "ia3", "prefix", "prompt")
# adapters whose weight deltas fold into the base weights (export 'merged', chaining)
MERGEABLE = ("lora", "qlora", "dora", "ia3")


class StrategyError(TuneforgeError, ValueError):
    pass


def is_adapter(kind: str) -> bool:
    """True when the strategy trains a PEFT adapter (saved to run/adapter), not the model itself."""
    return kind in ADAPTERS


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of the Linear layers LoRA can target (the LM head excluded)."""
    import torch

    names = set()
    for full, mod in model.named_modules():
        if (isinstance(mod, torch.nn.Linear) or _is_bnb_linear(mod)) and not full.endswith("lm_head"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def _is_bnb_linear(mod: Any) -> bool:
    return type(mod).__name__ in ("Linear4bit", "Linear8bitLt")


def _numel(p: Any) -> int:
    """Values in a parameter; a bitsandbytes 4-bit weight packs two per stored byte (its quant_state
    keeps the real shape)."""
    qs = getattr(p, "quant_state", None)
    return int(math.prod(qs.shape)) if qs is not None and getattr(qs, "shape", None) else p.numel()


def param_counts(model: Any) -> dict[str, int | float]:
    total = sum(_numel(p) for p in model.parameters())
    trainable = sum(_numel(p) for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_pct": round(100 * trainable / max(total, 1), 3)}


def check_targets(model: Any, cfg: StrategyConfig) -> list[str] | str:
    """The validated `target_modules` (names that exist as Linear layers, or 'all-linear')."""
    available = linear_module_names(model)
    if cfg.target_modules == "all-linear":
        if not available:
            raise StrategyError(f"strategy.kind={cfg.kind}: the model has no Linear layers to adapt")
        return "all-linear"
    unknown = [t for t in cfg.target_modules if t not in available]
    if unknown or not cfg.target_modules:
        raise StrategyError(
            f"strategy.target_modules: {unknown or '[]'} not found in the model — available linear modules: "
            f"{available} (or use 'all-linear')"
        )
    return list(cfg.target_modules)


# -- freeze ---------------------------------------------------------------------------------------


def decoder_layers(model: Any, key: str = "strategy.train_layers") -> tuple[str, Any]:
    """(qualified name, ModuleList) of the transformer blocks: the longest ModuleList in the model."""
    import torch

    lists = [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.ModuleList) and len(m) > 0]
    if not lists:
        fix = " with strategy.trainable_modules" if key == "strategy.train_layers" else " (adapt every layer)"
        raise StrategyError(f"{key}: no list of transformer layers found in the model — use {key}=null{fix}")
    return max(lists, key=lambda nm: len(nm[1]))


def final_norm_names(model: Any, layers_name: str) -> list[str]:
    """Norm modules that sit beside the layer list (Llama `model.norm`, GPT-2 `transformer.ln_f`)."""
    parent = layers_name.rsplit(".", 1)[0] if "." in layers_name else ""
    out = []
    for name, _ in model.named_modules():
        head, _, leaf = name.rpartition(".")
        if head == parent and name != layers_name and ("norm" in leaf.lower() or leaf in ("ln_f", "ln_out")):
            out.append(name)
    return out


def last_layers(model: Any, n: int, key: str) -> list[int]:
    """Indices of the last `n` decoder layers (an error naming `key` when the model has fewer)."""
    _, layers = decoder_layers(model, key)
    if n > len(layers):
        raise StrategyError(f"{key}={n}, but the model has only {len(layers)} layers — use at most {len(layers)}")
    return list(range(len(layers) - n, len(layers)))


def apply_freeze(model: Any, cfg: StrategyConfig) -> Any:
    """Train only the last `train_layers` blocks (+ the final norm) and modules named in `trainable_modules`."""
    chosen: list[str] = []
    if cfg.train_layers:
        layers_name, layers = decoder_layers(model)
        if cfg.train_layers > len(layers):
            raise StrategyError(
                f"strategy.train_layers={cfg.train_layers}, but the model has only {len(layers)} "
                f"layers — use at most {len(layers)} (or strategy.kind=full)"
            )
        chosen += [f"{layers_name}.{i}" for i in range(len(layers) - cfg.train_layers, len(layers))]
        chosen += final_norm_names(model, layers_name)
    names = [n for n, _ in model.named_modules() if n]
    for sub in cfg.trainable_modules:
        hits = [n for n in names if sub in n]
        if not hits:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in names})
            raise StrategyError(
                f"strategy.trainable_modules: {sub!r} matches no module — module names contain e.g. {leaves[:12]}"
            )
        chosen += hits
    if not chosen:
        raise StrategyError(
            "strategy.kind=freeze trains nothing: set strategy.train_layers (last N layers) and/or "
            "strategy.trainable_modules"
        )
    prefixes = tuple(c + "." for c in chosen)
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
    # tied weights (embed_tokens = lm_head) are one tensor: named_parameters lists it once, under the
    # input embedding's name, so 'lm_head' is also honoured through the output embedding module
    if any("lm_head" in c for c in chosen) and model.get_output_embeddings() is not None:
        for p in model.get_output_embeddings().parameters():
            p.requires_grad_(True)
    return model


# -- PEFT adapters ----------------------------------------------------------------------------------


def feedforward_names(model: Any, targets: list[str] | str) -> list[str]:
    """IA3's feed-forward modules (scaled on their input): the MLP down projection among the targets."""
    names = linear_module_names(model) if targets == "all-linear" else targets
    # leaf names of Linear layers inside an MLP block whose name marks the projection back to hidden size
    mlp = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules() if ".mlp." in n or ".feed_forward." in n}
    return [t for t in names if t in mlp and t in ("down_proj", "fc2", "c_proj", "dense_4h_to_h", "w2")]


def supports_prompt_learning(model: Any) -> str | None:
    """Why PEFT's prefix/prompt tuning cannot drive this model, or None when it can."""
    cfg = getattr(model, "config", None)
    if cfg is None:
        return "the model has no config"
    if getattr(cfg, "is_encoder_decoder", False):
        return "encoder-decoder models are not supported here (causal LMs only)"
    missing = [k for k in ("num_hidden_layers", "num_attention_heads", "hidden_size") if getattr(cfg, k, None) is None]
    if missing:
        return f"its config lacks {missing}, which PEFT needs to size the virtual key/values"
    return None


def peft_config(model: Any, cfg: StrategyConfig, tokenizer_path: str | None = None) -> Any:
    import peft

    if cfg.kind in ("lora", "qlora", "dora"):
        targets = check_targets(model, cfg)
        layers = last_layers(model, cfg.layers, "strategy.layers") if cfg.layers else None
        if layers and targets == "all-linear":  # PEFT takes layers_to_transform with module names only
            targets = linear_module_names(model)
        return peft.LoraConfig(
            r=cfg.r,
            lora_alpha=cfg.alpha,
            lora_dropout=cfg.dropout,
            bias="none",
            target_modules=targets,
            use_dora=cfg.kind == "dora",
            layers_to_transform=layers,
            task_type="CAUSAL_LM",
        )
    if cfg.kind == "ia3":
        targets = check_targets(model, cfg)
        # PEFT saves an expanded 'all-linear' as full module paths, and its IA3Config then refuses
        # to load the adapter ('feedforward_modules should be a subset of target_modules', leaf vs
        # full names; peft 0.21): give the leaf names explicitly instead
        targets = linear_module_names(model) if targets == "all-linear" else targets
        # IA3 scales the *input* of feed-forward modules and the output of the others
        return peft.IA3Config(
            target_modules=targets, feedforward_modules=feedforward_names(model, targets), task_type="CAUSAL_LM"
        )
    why = supports_prompt_learning(model)
    if why:
        raise StrategyError(f"strategy.kind={cfg.kind}: {why} — use lora instead")
    if cfg.kind == "prefix":
        return peft.PrefixTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type="CAUSAL_LM")
    if cfg.prompt_init_text is not None:
        if not cfg.prompt_init_text.strip():
            raise StrategyError("strategy.prompt_init_text is empty — give some text or leave it unset (random)")
        return peft.PromptTuningConfig(
            num_virtual_tokens=cfg.num_virtual_tokens,
            task_type="CAUSAL_LM",
            prompt_tuning_init="TEXT",
            prompt_tuning_init_text=cfg.prompt_init_text,
            tokenizer_name_or_path=tokenizer_path,
        )
    return peft.PromptTuningConfig(num_virtual_tokens=cfg.num_virtual_tokens, task_type="CAUSAL_LM")


def _dry_run(model: Any, kind: str) -> None:
    """A 2-token forward: PEFT's virtual key/values fail on caches it does not know at the first call."""
    import torch

    ids = torch.tensor([[1, 2]], device=next(model.parameters()).device)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids), use_cache=False)
    except Exception as exc:  # any failure here means the adapter does not fit this architecture
        mtype = getattr(model.config, "model_type", "?")
        raise StrategyError(
            f"strategy.kind={kind}: PEFT cannot run {kind} tuning on model type {mtype!r} "
            f"({type(exc).__name__}: {exc}) — use lora instead"
        ) from exc


def apply_strategy(model: Any, cfg: StrategyConfig, tokenizer_path: str | None = None) -> Any:
    """Return the model prepared for training under `cfg` (a PeftModel for adapters).

    qlora expects a base already loaded in 4 bits (`quantize.load_quantized_base`).
    """
    if cfg.kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg.kind == "freeze":
        return apply_freeze(model, cfg)
    from peft import get_peft_model

    # prompt tuning's text initialisation tokenises with the model's own tokenizer (its folder)
    pcfg = peft_config(model, cfg, tokenizer_path or getattr(model.config, "_name_or_path", None))
    try:
        peft_model = get_peft_model(model, pcfg)
    except (ValueError, TypeError, AttributeError, KeyError) as exc:
        raise StrategyError(f"strategy.kind={cfg.kind}: PEFT refused the model ({type(exc).__name__}: {exc})") from exc
    if cfg.kind in PROMPT_LEARNING:
        _dry_run(peft_model, cfg.kind)
    return peft_model
