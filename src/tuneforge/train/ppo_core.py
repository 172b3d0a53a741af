"""The arithmetic of PPO for language models, as pure functions on tensors.

Shapes: every per-token tensor is [batch, T] over the *response* tokens of a rollout
(position t holds the action "emit response token t"); `mask` is 1.0 on real response
tokens (the stop token included: stopping is an action too) and 0.0 on padding after it.
Nothing here knows about models, tokenizers or recipes, so each formula is unit-tested
on toy tensors (tests/train/test_ppo.py).

References: Schulman et al. 2017 (clipped surrogate, PPO), Schulman et al. 2016 (GAE),
Ziegler et al. 2019 / Ouyang et al. 2022 (per-token KL penalty to the reference policy,
reward-model score on the last token).
"""

from __future__ import annotations

import torch


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """Mean of `x` where `mask` is 1 (over everything, or along `dim`).

    >>> masked_mean(torch.tensor([1.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 0.0]))
    tensor(2.)
    """
    if dim is None:
        return (x * mask).sum() / mask.sum().clamp(min=1)
    return (x * mask).sum(dim) / mask.sum(dim).clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of `x` where `mask` is 1 (Bessel-corrected when `unbiased` and n > 1)."""
    mean = masked_mean(x, mask)
    var = masked_mean((x - mean) ** 2, mask)
    n = mask.sum()
    if unbiased and n > 1:
        var = var * n / (n - 1)
    return var


def whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """Normalise `x` to unit variance (and zero mean unless `shift_mean=False`) over masked entries.

    Padding stays 0 so it can never leak into a loss.

    >>> w = whiten(torch.tensor([[1.0, 2.0, 3.0, 9.0]]), torch.tensor([[1.0, 1.0, 1.0, 0.0]]))
    >>> [round(v, 3) for v in w[0].tolist()]
    [-1.0, 0.0, 1.0, 0.0]
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    out = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        out = out + mean
    return out * mask


def gae(
    rewards: torch.Tensor, values: torch.Tensor, mask: torch.Tensor, gamma: float = 1.0, lam: float = 0.95
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation: (advantages, returns), both [B, T], 0 on padding.

        delta_t = r_t + gamma * V_{t+1} - V_t          (V after the last real token is 0)
        A_t     = delta_t + gamma * lam * A_{t+1}
        R_t     = A_t + V_t                             (the value target)

    With gamma = lam = 1, A_t is the reward-to-go sum_{k>=t} r_k minus V_t.

    >>> a, r = gae(torch.tensor([[0.0, 1.0]]), torch.tensor([[0.5, 0.5]]), torch.ones(1, 2), 1.0, 1.0)
    >>> a.tolist(), r.tolist()
    ([[0.5, 0.5]], [[1.0, 1.0]])
    """
    rewards, values, mask = rewards * mask, values * mask, mask.to(rewards.dtype)
    T = rewards.shape[1]
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros_like(rewards[:, 0])
    next_adv = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(T)):
        # a padded step contributes nothing and passes nothing back: the episode ended before it
        m = mask[:, t]
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        a = (delta + gamma * lam * next_adv) * m
        adv[:, t] = a
        next_value = values[:, t] * m
        next_adv = a
    return adv, (adv + values) * mask


def shaped_rewards(
    scores: torch.Tensor, logprobs: torch.Tensor, ref_logprobs: torch.Tensor, mask: torch.Tensor, kl_coef: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-token rewards (-kl_coef * (logp - ref_logp), plus the sequence score on its last
    real token) and the per-token KL estimate, both [B, T] and 0 on padding.

    >>> r, kl = shaped_rewards(torch.tensor([2.0]), torch.tensor([[-1.0, -1.0, 0.0]]),
    ...                        torch.tensor([[-2.0, -1.0, 0.0]]), torch.tensor([[1.0, 1.0, 0.0]]), 0.5)
    >>> r.tolist(), kl.tolist()
    ([[-0.5, 2.0, 0.0]], [[1.0, 0.0, 0.0]])
    """
    kl = (logprobs - ref_logprobs) * mask
    rewards = torch.zeros_like(kl) - kl_coef * kl  # (0 - 0 keeps +0.0 on padding)
    last = (mask.sum(1).long() - 1).clamp(min=0)  # a response always has >= 1 token
    rewards[torch.arange(len(scores)), last] += scores.to(rewards.dtype)
    return rewards, kl


def policy_loss(
    logprobs: torch.Tensor, old_logprobs: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO's clipped surrogate loss: mean over tokens of max(-A·ρ, -A·clip(ρ, 1±ε)), ρ = π/π_old.

    Stats: `clip_frac` (share of tokens where the clipped term won) and `approx_kl`
    (the k3 estimator E[ρ - 1 - log ρ] of KL(π_old ‖ π), >= 0).

    >>> one = torch.ones(1, 1)
    >>> loss, s = policy_loss(torch.log(torch.tensor([[1.5]])), torch.zeros(1, 1), one, one, 0.2)
    >>> round(loss.item(), 4), s["clip_frac"].item()
    (-1.2, 1.0)
    """
    log_ratio = (logprobs - old_logprobs) * mask
    ratio = torch.exp(log_ratio)
    unclipped = -advantages * ratio
    clipped = -advantages * torch.clamp(ratio, 1.0 - clip_range, 1.0 + clip_range)
    loss = masked_mean(torch.maximum(unclipped, clipped), mask)
    with torch.no_grad():
        stats = {
            "clip_frac": masked_mean((clipped > unclipped).float(), mask),
            "approx_kl": masked_mean(ratio - 1.0 - log_ratio, mask),
            "ratio": masked_mean(ratio, mask),
        }
    return loss, stats


def value_loss(
    values: torch.Tensor, old_values: torch.Tensor, returns: torch.Tensor, mask: torch.Tensor, clip_range: float
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clipped value loss: 0.5 · mean of max((V - R)², (V_clip - R)²), V_clip = V_old + clip(V - V_old, ±ε).

    Clipping keeps one rollout batch from dragging the value head far from where it was.

    >>> loss, s = value_loss(torch.tensor([[2.0]]), torch.zeros(1, 1), torch.ones(1, 1), torch.ones(1, 1), 0.5)
    >>> loss.item(), s["value_clip_frac"].item()
    (0.5, 0.0)
    """
    clipped_values = old_values + torch.clamp(values - old_values, -clip_range, clip_range)
    err = (values - returns) ** 2
    err_clipped = (clipped_values - returns) ** 2
    loss = 0.5 * masked_mean(torch.maximum(err, err_clipped), mask)
    with torch.no_grad():
        stats = {"value_clip_frac": masked_mean((err_clipped > err).float(), mask)}
    return loss, stats


def logprobs_of(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """log π(token) at each position: logits [B, T, V], tokens [B, T] -> [B, T] (float32)."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return torch.gather(logp, 2, tokens.unsqueeze(-1)).squeeze(-1)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    """Entropy of the categorical distribution at each position: [B, T, V] -> [B, T]."""
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1)


def response_mask(responses: torch.Tensor, stop_ids: list[int]) -> torch.Tensor:
    """1.0 up to and including the first stop token of each row, 0.0 after it.

    >>> response_mask(torch.tensor([[5, 3, 0, 0], [5, 6, 7, 8]]), [3]).tolist()
    [[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]]
    """
    is_stop = torch.zeros_like(responses, dtype=torch.bool)
    for s in stop_ids:
        is_stop |= responses == s
    # stops strictly before position t: once one is seen, everything after is padding
    before = torch.cumsum(is_stop.long(), dim=1) - is_stop.long()
    return (before == 0).float()
