"""Causal-LM loss computed only where labels are (the LM head skips prompt positions)."""

from __future__ import annotations

from typing import Any

import torch

from .template import IGNORE_INDEX


def labelled_logits(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, Any]:
    """(logits [N, V], targets [N], outputs) at exactly the positions whose next token has a label.

    Position i predicts token i+1, so the LM head runs only at positions whose next
    label is set: through `logits_to_keep` (a tensor of positions), the union over
    rows of a padded batch or exactly the labelled positions of a packed row.
    """
    outputs, targets, sel = _labelled_forward(model, inputs, labels)
    return outputs.logits[sel], targets, outputs


def _labelled_forward(model: Any, inputs: dict[str, Any], labels: torch.Tensor) -> tuple:
    """(outputs, targets [N], mask selecting the N labelled ones among the kept positions)."""
    targets_all = labels[..., 1:]
    has = targets_all != IGNORE_INDEX
    keep = has.any(0).nonzero().squeeze(-1)
    shift = virtual_token_shift(model)
    # training never needs a KV cache
    outputs = model(**{"use_cache": False, **inputs}, logits_to_keep=keep + shift if shift else keep)
    sel = has[:, keep]
    return outputs, targets_all[:, keep][sel], sel


def virtual_token_shift(model: Any) -> int:
    """How many learned embeddings prompt tuning puts before the input (0 for every other model).

    PEFT's prompt tuning (and p-tuning) prepends them to the input embeddings, so the
    model's hidden states, and `logits_to_keep` positions, are shifted right by that
    many; prefix tuning adds key/values instead and shifts nothing.
    """
    inner = getattr(model, "module", model)  # DDP/FSDP wrappers keep the PeftModel in .module
    cfg = getattr(inner, "active_peft_config", None)
    if cfg is None or not getattr(cfg, "is_prompt_learning", False) or getattr(inner, "_adapters_disabled", False):
        return 0  # no adapter, or switched off (`with model.disable_adapter():` runs the bare base)
    if getattr(cfg.peft_type, "value", cfg.peft_type) == "PREFIX_TUNING":
        return 0
    return int(cfg.num_virtual_tokens)


def matmul_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a matmul on `x` runs in here: autocast's where it is on, else x's own."""
    dev = x.device.type
    return torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x.dtype


class _LinearCrossEntropy(torch.autograd.Function):
    """Summed cross-entropy of `hidden @ weight.T (+ bias)` against `targets`, chunk by chunk.

    The gradients are computed during the forward pass, one chunk of positions at a time,
    so the [positions, vocab] logits never exist whole: with a 49k vocabulary they and
    their fp32 softmax/gradient copies were the largest activation of a LoRA step. Only
    the gradient w.r.t. the hidden states ([positions, d]) is kept for backward.

    With `base_hidden` (the same positions' head input with the adapter off, no grad) the
    loss is CE + β · Σ KL(p_tuned ‖ p_base), the base logits formed chunk by chunk too; it
    returns (loss, the KL sum alone, not differentiable: for logging). The base logits are a
    constant of the loss (no gradient flows into them, as the no-grad base pass gave them).
    """

    @staticmethod
    def forward(ctx, hidden, weight, bias, targets, chunk, base_hidden=None, beta=0.0):  # type: ignore[override]
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        need_b = bias is not None and ctx.needs_input_grad[2]
        total = torch.zeros((), dtype=torch.float32, device=hidden.device)
        kl = torch.zeros((), dtype=torch.float32, device=hidden.device)
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        grad_b = torch.zeros(bias.shape, dtype=torch.float32, device=bias.device) if need_b else None
        mm_dtype = matmul_dtype(hidden)  # the gradient matmuls run in the forward matmul's dtype
        for s in range(0, hidden.shape[0], chunk):
            h, t = hidden[s : s + chunk], targets[s : s + chunk]
            logits = torch.nn.functional.linear(h, weight, bias).float()  # bf16 matmul under autocast
            # one exp over [chunk, vocab] (logsumexp and then the softmax took two; exp is
            # the costliest pass here): e = exp(z - max), lse = max + log Σe, softmax = e / Σe
            target_logit = logits.gather(1, t[:, None]).squeeze(1)
            top = logits.amax(-1, keepdim=True)
            if base_hidden is None:
                e = logits.sub_(top).exp_()
                norm = e.sum(-1, keepdim=True)
                total += (top.squeeze(1) + norm.log().squeeze(1) - target_logit).sum()
                if not (need_h or need_w or need_b):
                    continue
                g = e.div_(norm)  # softmax, in place of the logits
            else:
                z = logits.sub_(top)
                e = z.exp()
                norm = e.sum(-1, keepdim=True)
                log_norm = norm.log()
                total += (top.squeeze(1) + log_norm.squeeze(1) - target_logit).sum()
                p = e.div_(norm)
                # log p − log q, the base's log-softmax by the same ops as the tuned one's, so that
                # identical hidden states (an adapter at its zero init) give a KL of exactly 0
                base_logits = torch.nn.functional.linear(base_hidden[s : s + chunk], weight, bias).float()
                d = z.sub_(log_norm).sub_(_log_softmax_(base_logits))
                with torch.autocast(hidden.device.type, enabled=False):  # an fp32 dot, not autocast's bf16 bmm
                    kl_rows = torch.einsum("nv,nv->n", p, d)  # KL(p ‖ q) per position, no [n, v] temporary
                kl += kl_rows.sum()
                total += beta * kl_rows.sum()
                if not (need_h or need_w or need_b):
                    continue
                # d(CE + β·KL)/d(logits) = p − onehot + β · p ⊙ (log p − log q − KL), the onehot below
                g = d.sub_(kl_rows[:, None]).mul_(beta).add_(1.0).mul_(p)
            g[torch.arange(len(t), device=g.device), t] -= 1.0  # d(sum CE)/d(logits)
            g = g.to(mm_dtype)
            if need_h:
                grad_h[s : s + chunk] = (g @ weight.to(g.dtype)).to(hidden.dtype)
            if need_w:
                grad_w += (g.t() @ h.to(g.dtype)).float()
            if need_b:
                grad_b += g.float().sum(0)
        ctx.save_for_backward(*(x for x in (grad_h, grad_w, grad_b) if x is not None))
        ctx.has = (need_h, need_w, need_b)
        ctx.dtypes = (weight.dtype, bias.dtype if bias is not None else None)
        if base_hidden is None:
            return total
        ctx.mark_non_differentiable(kl)
        return total, kl

    @staticmethod
    def backward(ctx, grad_out, *_grad_kl):  # type: ignore[override]
        saved = iter(ctx.saved_tensors)
        gh, gw, gb = (next(saved) if has else None for has in ctx.has)
        return (
            gh * grad_out.to(gh.dtype) if gh is not None else None,
            (gw * grad_out).to(ctx.dtypes[0]) if gw is not None else None,
            (gb * grad_out).to(ctx.dtypes[1]) if gb is not None else None,
            None,
            None,
            None,
            None,
        )


def _log_softmax_(z: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last dim, in place: z − max − log Σ exp(z − max)."""
    z = z.sub_(z.amax(-1, keepdim=True))
    return z.sub_(z.exp().sum(-1, keepdim=True).log())


def plain_output_head(model: Any) -> torch.nn.Linear | None:
    """The model's LM head when it is a plain Linear with nothing applied to its logits after
    it (the chunked loss then gives exactly the model's loss), else None."""
    inner = getattr(model, "module", model)
    get = getattr(inner, "get_output_embeddings", None)
    head = get() if callable(get) else None
    cfg = getattr(inner, "config", None)
    if (
        type(head) is not torch.nn.Linear
        or getattr(cfg, "final_logit_softcapping", None)
        or getattr(cfg, "logit_scale", None) not in (None, 1, 1.0)
    ):
        return None
    return head


def label_positions_loss(
    model: Any, inputs: dict[str, Any], labels: torch.Tensor, chunk: int = 1024
) -> tuple[torch.Tensor, int, Any]:
    """Summed next-token cross-entropy over labelled positions, the target count, and the outputs.

    With a plain LM head, the head's input is taken by a forward pre-hook (the head itself
    then runs on zero positions) and the loss is computed chunk by chunk
    (`_LinearCrossEntropy`); otherwise the labelled logits are materialised.

    >>> # loss_sum, n, _ = label_positions_loss(model, {"input_ids": ids}, labels)
    """
    head = plain_output_head(model)
    if head is None:
        logits, targets, outputs = labelled_logits(model, inputs, labels)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        return loss, int(targets.numel()), outputs
    outputs, targets, hidden = _labelled_head_input(model, head, inputs, labels)
    loss = _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk)
    return loss, int(targets.numel()), outputs


def _labelled_head_input(model: Any, head: torch.nn.Linear, inputs: dict[str, Any], labels: torch.Tensor) -> tuple:
    """(outputs, targets [N], the LM head's input [N, d] at the labelled positions); the head
    itself runs on zero positions (its input is taken by a forward pre-hook)."""
    captured: dict[str, torch.Tensor] = {}

    def take_input(_module: Any, args: tuple) -> tuple:
        captured["hidden"] = args[0]
        return (args[0][..., :0, :],)

    handle = head.register_forward_pre_hook(take_input)
    try:
        outputs, targets, sel = _labelled_forward(model, inputs, labels)
    finally:
        handle.remove()
    return outputs, targets, captured["hidden"][sel]


def adapter_disabled(model: Any) -> Any:
    """`with adapter_disabled(model):` runs the bare base model: PEFT's `disable_adapter()` on the
    model inside a DDP/FSDP wrapper (the forward itself still goes through the wrapper)."""
    return getattr(model, "module", model).disable_adapter()


def label_positions_loss_with_kl(
    model: Any, inputs: dict[str, Any], labels: torch.Tensor, beta: float, chunk: int = 1024
) -> tuple[torch.Tensor, torch.Tensor, int, Any]:
    """`label_positions_loss` + β · Σ KL(p_tuned ‖ p_base) over the same labelled positions:
    (summed loss, summed KL (detached), target count, outputs).

    The base is the same PEFT model with its adapter switched off, run first under no_grad
    (no second copy of the weights, no activations kept); both passes form logits at the
    labelled positions only, so memory stays that of the label-only path. KL(tuned ‖ base)
    is the forgetting penalty of the tuned distribution's own mass, Σ_v p (log p − log q).

    >>> # loss_sum, kl_sum, n, _ = label_positions_loss_with_kl(peft_model, {"input_ids": ids}, labels, 0.1)
    """
    head = plain_output_head(model)
    with torch.no_grad(), adapter_disabled(model):
        if head is None:
            base = labelled_logits(model, inputs, labels)[0]
        else:
            base = _labelled_head_input(model, head, inputs, labels)[2]
    if head is None:
        logits, targets, outputs = labelled_logits(model, inputs, labels)
        logp = torch.log_softmax(logits.float(), -1)
        kl = (logp.exp() * (logp - torch.log_softmax(base.float(), -1))).sum()
        loss = torch.nn.functional.nll_loss(logp, targets, reduction="sum") + beta * kl
        return loss, kl.detach(), int(targets.numel()), outputs
    outputs, targets, hidden = _labelled_head_input(model, head, inputs, labels)
    loss, kl = _LinearCrossEntropy.apply(hidden, head.weight, head.bias, targets, chunk, base, float(beta))
    return loss, kl, int(targets.numel()), outputs
