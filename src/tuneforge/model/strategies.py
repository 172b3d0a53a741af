"""What is trained: LoRA adapters or all weights. Validated against the model up front."""

from __future__ import annotations

from typing import Any

from ..recipe import StrategyConfig


class StrategyError(ValueError):
    pass


def linear_module_names(model: Any) -> list[str]:
    """Leaf names of the Linear layers LoRA can target (the LM head excluded)."""
    import torch

    names = set()
    for full, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear) and not full.endswith("lm_head"):
            names.add(full.rsplit(".", 1)[-1])
    return sorted(names)


def param_counts(model: Any) -> dict[str, int | float]:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "trainable_pct": round(100 * trainable / max(total, 1), 3)}


def apply_strategy(model: Any, cfg: StrategyConfig) -> Any:
    """Return the model prepared for training under `cfg` (a PeftModel for LoRA)."""
    if cfg.kind == "full":
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    from peft import LoraConfig, get_peft_model

    available = linear_module_names(model)
    if cfg.target_modules != "all-linear":
        unknown = [t for t in cfg.target_modules if t not in available]
        if unknown:
            raise StrategyError(
                f"strategy.target_modules: {unknown} not found in the model — available linear modules: "
                f"{available} (or use 'all-linear')"
            )
    lcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=cfg.target_modules,
                      task_type="CAUSAL_LM", bias="none")
    return get_peft_model(model, lcfg)
