"""PPO (RLHF): sample replies from the policy, score them with a reward, and improve the
policy with the clipped surrogate objective while a per-token KL penalty keeps it near the
frozen reference. TRL no longer ships PPO, so the loop is written here; the formulas live
in `ppo_core.py` (pure, unit-tested).

One iteration (= one logged step):
  1. rollout: `training.batch_size` prompts (user turns of the prepared train split, in a
     seeded order) -> sampled replies (`objective.max_new_tokens`, `objective.temperature`,
     no top-k/top-p: PPO needs samples from the very distribution it optimises);
  2. score: reward model and/or reward functions on (prompt, reply); log-probs of the
     policy, of the reference (the same model with its adapter disabled: no second copy)
     and the value head's estimates;
  3. per-token rewards (score on the last token, -kl_coef * (logp - ref_logp) on every
     token), GAE advantages (whitened) and returns;
  4. `objective.ppo_epochs` optimiser steps on that batch (each over
     `training.gradient_accumulation` micro-batches): clipped policy loss + vf_coef x clipped
     value loss.

Writes: adapter/ (or model/ for strategy full) with value_head.safetensors beside the
weights, logs/metrics.jsonl (one row per iteration), checkpoints/checkpoint-N (atomic,
resumable: trainable weights, value head, optimiser, scheduler, RNG).
"""

from __future__ import annotations

import contextlib
import copy
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from ..errors import TuneforgeError
from ..io import atomic_write_json, read_jsonl, replace_dir, staging_dir
from ..lm.template import prompt_messages, render
from ..run import RunDir
from . import ppo_core as core
from .checkpoint import write_manifest
from .trainer import checkpoint_to_resume

VALUE_HEAD_FILE = "value_head.safetensors"
EVAL_PROMPTS = 32  # held-out prompts scored (greedy) before, during and after training


class PPOError(TuneforgeError, ValueError):
    pass


class ValueHead(torch.nn.Module):
    """V(state) from the policy's last hidden state. Zero-initialised: values start at 0 and
    the first value updates cannot push noise into the shared trunk."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.summary = torch.nn.Linear(hidden_size, 1)
        torch.nn.init.zeros_(self.summary.weight)
        torch.nn.init.zeros_(self.summary.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.summary(hidden.to(self.summary.weight.dtype)).squeeze(-1)


@dataclass
class Prompt:
    messages: list[dict]  # the conversation up to the reply the policy writes
    fields: dict  # the row's other columns (e.g. `expected`), passed to reward functions


@dataclass
class Rollout:
    query: torch.Tensor  # [B, P] left-padded prompt ids
    query_mask: torch.Tensor  # [B, P]
    response: torch.Tensor  # [B, T] sampled ids, padding after the stop token
    mask: torch.Tensor  # [B, T] float, 1 on real response tokens
    texts: list[str]
    scores: torch.Tensor  # [B]


# --------------------------------------------------------------------------- data


def load_prompts(path: Path) -> list[Prompt]:
    """Distinct prompts (conversation up to the last assistant reply) of a prepared split."""
    seen, out = set(), []
    for row in read_jsonl(path) if path.is_file() else []:
        msgs = [{"role": m["role"], "content": m["content"]} for m in prompt_messages(row["messages"])]
        if not msgs or msgs[-1]["role"] != "user":
            continue
        key = repr(msgs)
        if key not in seen:
            seen.add(key)
            out.append(Prompt(msgs, {k: v for k, v in row.items() if k != "messages" and not k.startswith("_")}))
    return out


def batch_indices(n: int, step: int, batch_size: int, seed: int) -> list[int]:
    """Prompt indices of iteration `step` (0-based): a fresh seeded permutation per pass over
    the prompts, so the order depends on (seed, step) only and a resumed run sees the same data."""
    out = []
    for pos in range(step * batch_size, (step + 1) * batch_size):
        epoch, i = divmod(pos, n)
        perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed + epoch))
        out.append(int(perm[i]))
    return out


def reward_fields(prompts: list[Prompt]) -> dict[str, list]:
    """Columns every prompt of the batch has, as reward-function keyword arguments."""
    common = set.intersection(*(set(p.fields) for p in prompts)) if prompts else set()
    return {k: [p.fields[k] for p in prompts] for k in sorted(common)}


def reward_fns_for(objective: Any) -> list[Callable]:
    from .rewards import RewardError, combined_reward

    try:
        return combined_reward(objective.reward_model, objective.reward_functions)
    except RewardError as exc:  # a PPOError: the CLI reports it as a recipe problem (exit 2)
        raise PPOError(str(exc)) from exc


def score(fns: list[Callable], prompts: list[Prompt], texts: list[str]) -> torch.Tensor:
    """Sum of every reward for each (prompt, reply)."""
    convs = [p.messages for p in prompts]
    fields = reward_fields(prompts)
    total = torch.zeros(len(texts))
    for fn in fns:
        vals = fn(convs, texts, **fields)
        if len(vals) != len(texts):
            name = getattr(fn, "__name__", fn)
            raise PPOError(f"reward {name!r} returned {len(vals)} scores for {len(texts)} replies")
        total += torch.tensor([float(v) for v in vals])
    return total


# --------------------------------------------------------------------------- model passes


def encode_prompts(tokenizer: Any, prompts: list[Prompt], device: Any) -> tuple[torch.Tensor, torch.Tensor]:
    texts = [render(tokenizer, p.messages, add_generation_prompt=True) for p in prompts]
    side = tokenizer.padding_side
    tokenizer.padding_side = "left"  # replies continue right after each prompt
    try:
        enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False)
    finally:
        tokenizer.padding_side = side
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


@torch.no_grad()
def sample(
    model: Any,
    tokenizer: Any,
    query: torch.Tensor,
    query_mask: torch.Tensor,
    max_new_tokens: int,
    temperature: float | None,
    stop_ids: list[int],
) -> tuple[torch.Tensor, torch.Tensor]:
    """(response ids [B, T], mask [B, T]); greedy when `temperature` is None."""
    from transformers import GenerationConfig

    sampling = (
        {"do_sample": True, "temperature": temperature, "top_k": 0, "top_p": 1.0}
        if temperature
        else {"do_sample": False}
    )
    cfg = GenerationConfig(
        max_new_tokens=max_new_tokens, eos_token_id=stop_ids, pad_token_id=tokenizer.pad_token_id, **sampling
    )
    was_training = model.training
    model.eval()
    try:
        out = model.generate(input_ids=query, attention_mask=query_mask, generation_config=cfg)
    finally:
        model.train(was_training)
    response = out[:, query.shape[1] :]
    mask = core.response_mask(response, stop_ids)
    return response.masked_fill(mask == 0, tokenizer.pad_token_id), mask


def forward(
    model: Any, value_head: ValueHead | None, r: Rollout, temperature: float, rows: slice = slice(None)
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """(logits/temperature [B, T, V], log-probs of the response [B, T], values [B, T] or None).

    Position t is read off the position *before* response token t (the state in which it was
    chosen). Position ids follow the attention mask, exactly as `generate` numbered the
    left-padded prompts, and the LM head runs only on the last T+1 positions.
    """
    query, response, mask = r.query[rows], r.response[rows], r.mask[rows]
    attn = torch.cat([r.query_mask[rows], mask.to(r.query_mask.dtype)], dim=1)
    ids = torch.cat([query, response], dim=1)
    pos = (attn.cumsum(-1) - 1).clamp(min=0)
    T = response.shape[1]
    out = model(
        input_ids=ids,
        attention_mask=attn,
        position_ids=pos,
        logits_to_keep=T + 1,
        output_hidden_states=value_head is not None,
        use_cache=False,
    )
    logits = out.logits[:, :-1].float() / temperature
    logp = core.logprobs_of(logits, response)
    values = None
    if value_head is not None:
        P = query.shape[1]
        values = value_head(out.hidden_states[-1][:, P - 1 : P + T - 1])
    return logits, logp, values


def reference(model: Any, ref_model: Any | None):
    """Context for reference passes: the adapter switched off (PEFT), or a frozen copy."""
    if ref_model is not None:
        return contextlib.nullcontext(ref_model)
    return _disabled(model)


@contextlib.contextmanager
def _disabled(model: Any):
    with model.disable_adapter():
        yield model


def micro_slices(n: int, parts: int) -> list[slice]:
    size = math.ceil(n / min(parts, n))
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


# --------------------------------------------------------------------------- checkpoints


def trainable_state(model: Any) -> dict[str, torch.Tensor]:
    return {n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad}


def save_checkpoint(
    root: Path, step: int, model: Any, value_head: ValueHead, optimizer: Any, scheduler: Any, keep: int
) -> Path:
    """checkpoints/checkpoint-<step>, written aside and renamed; the newest `keep` are kept."""
    from safetensors.torch import save_file

    final = root / f"checkpoint-{step}"
    tmp = staging_dir(final)
    save_file(trainable_state(model), str(tmp / "trainable.safetensors"))
    save_file({k: v.contiguous() for k, v in value_head.state_dict().items()}, str(tmp / VALUE_HEAD_FILE))
    torch.save(
        {
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "rng_cpu": torch.get_rng_state(),
            "rng_cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        },
        tmp / "state.pt",
    )
    atomic_write_json(tmp / "trainer_state.json", {"global_step": step})
    write_manifest(tmp, kind="ppo")  # last: `last_checkpoint` resumes only what verifies against it
    replace_dir(tmp, final)
    done = sorted((p for p in root.glob("checkpoint-*") if p.is_dir()), key=lambda p: int(p.name.rsplit("-", 1)[1]))
    for old in done[:-keep]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def load_checkpoint(path: Path, model: Any, value_head: ValueHead, optimizer: Any, scheduler: Any) -> int:
    from safetensors.torch import load_file

    weights = load_file(str(path / "trainable.safetensors"))
    expected = set(trainable_state(model))
    if set(weights) != expected:
        raise PPOError(
            f"{path}: checkpoint weights do not match the model ({len(set(weights) ^ expected)} names "
            f"differ) — the recipe's model or strategy changed; train without --resume"
        )
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, tensor in weights.items():
            params[name].copy_(tensor)
    value_head.load_state_dict(load_file(str(path / VALUE_HEAD_FILE)))
    state = torch.load(path / "state.pt", weights_only=True)
    optimizer.load_state_dict(state["optimizer"])
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(state["rng_cpu"])
    if state["rng_cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["rng_cuda"])
    return int(path.name.rsplit("-", 1)[1])


def value_head_writer(value_head: ValueHead) -> Callable[[Path], None]:
    """Writes the value head beside the saved weights (`fit.save_result`'s extra_files)."""

    def write(folder: Path) -> None:
        from safetensors.torch import save_file

        save_file({k: v.contiguous() for k, v in value_head.state_dict().items()}, str(folder / VALUE_HEAD_FILE))

    return write


def load_value_head(folder: str | Path) -> ValueHead:
    """The value head saved beside a PPO adapter/model."""
    from safetensors.torch import load_file

    state = load_file(str(Path(folder) / VALUE_HEAD_FILE))
    head = ValueHead(state["summary.weight"].shape[1])
    head.load_state_dict(state)
    return head


# --------------------------------------------------------------------------- the loop


def check_recipe(recipe: Any) -> None:
    """What PPO cannot honour that only the launch shows (the recipe's own rules — no virtual-token
    strategies, no gradient checkpointing, no early stopping, a reward — ran when it loaded:
    `Recipe.check`)."""
    problems = []
    from ..dist import world_size

    if world_size() > 1:  # every rank would sample, train and write the same run directory
        problems.append(
            f"objective ppo runs in one process (WORLD_SIZE={world_size()}) — train it without "
            f"`accelerate launch` / --accelerate-config"
        )
    if problems:
        raise PPOError("; ".join(problems))


def train(
    run: RunDir, resume: bool = False, callbacks: list | None = None, reward_fns: list[Callable] | None = None
) -> dict:
    """PPO-train the run's policy; `reward_fns` (fn(prompts, completions, **fields) -> scores)
    replace the recipe's objective.reward_model / reward_functions when given (tests, library use).

    `callbacks` are HF TrainerCallbacks (or any object with some of their methods): they get
    on_train_begin / on_log (one per iteration, `model=` the policy) / on_train_end, and may
    stop training through `control.should_training_stop` (a checkpoint is written first).
    """
    from transformers import TrainerControl, TrainerState, TrainingArguments, get_scheduler

    from ..lm.generate import stop_token_ids
    from ..model.device import device_type
    from ..model.strategies import is_adapter
    from .callbacks import MetricsJsonlCallback
    from .fit import save_result
    from .setup import setup_model, tracking_callbacks, training_source

    recipe = run.require().recipe()
    cfg, obj = recipe.training, recipe.objective
    check_recipe(recipe)
    if not run.split_file("train").is_file():
        raise FileNotFoundError(f"{run.path}: no prepared data — run `tuneforge prepare` first")
    prompts = load_prompts(run.split_file("train"))
    if not prompts:
        raise PPOError(f"{run.split_file('train')}: no prompts (rows need a user turn) — ppo samples replies to them")
    eval_prompts = load_prompts(run.split_file("validation"))[:EVAL_PROMPTS]
    fns = list(reward_fns) if reward_fns else reward_fns_for(obj)
    trackers = tracking_callbacks(run, cfg)  # fails early when a tracker is not installed

    # source → tokenizer → seeded model with its strategy (qlora, chained runs, ...), as every objective
    setup = setup_model(recipe.model, recipe.strategy, cfg, training_source(run, recipe.model))
    model, tokenizer, bf16 = setup.model, setup.tokenizer, setup.bf16
    # a PEFT adapter is switched off for reference passes; full/freeze need a frozen copy of the start
    ref_model = None if is_adapter(recipe.strategy.kind) else copy.deepcopy(model).eval().requires_grad_(False)
    device = next(model.parameters()).device
    value_head = ValueHead(model.config.hidden_size).to(device)
    for f in fns:  # a reward model scores on the policy's device
        if hasattr(f, "model") and hasattr(f.model, "to"):
            f.model.to(device)
    stop_ids = stop_token_ids(tokenizer, model)
    counts = {**setup.counts, "value_head": sum(p.numel() for p in value_head.parameters())}

    steps_per_pass = math.ceil(len(prompts) / cfg.batch_size)
    total = cfg.max_steps if cfg.max_steps > 0 else math.ceil(cfg.epochs * steps_per_pass)
    params = [p for p in model.parameters() if p.requires_grad] + list(value_head.parameters())
    optimizer = torch.optim.AdamW(params, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
    opt_steps = total * obj.ppo_epochs
    scheduler = get_scheduler(
        cfg.scheduler, optimizer, num_warmup_steps=math.ceil(cfg.warmup_ratio * opt_steps), num_training_steps=opt_steps
    )
    save_every = cfg.save_steps if cfg.save_strategy == "steps" else steps_per_pass
    eval_every = {"steps": cfg.eval_steps, "epoch": steps_per_pass}.get(cfg.eval_strategy, 0)

    start, checkpoint = 0, checkpoint_to_resume(run.checkpoints_dir, resume, PPOError)
    if checkpoint:
        start = load_checkpoint(Path(checkpoint), model, value_head, optimizer, scheduler)
        for stale in run.checkpoints_dir.glob(".checkpoint-*"):  # staging left by a run killed mid-save
            shutil.rmtree(stale, ignore_errors=True)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()

    # callbacks written for the HF Trainer (metrics.jsonl, TensorBoard, MLflow, W&B) get what the
    # Trainer would give them: its arguments, state and control
    args = TrainingArguments(
        output_dir=str(run.checkpoints_dir),
        max_steps=total,
        learning_rate=cfg.learning_rate,
        per_device_train_batch_size=cfg.batch_size,
        seed=cfg.seed,
        logging_steps=1,
        report_to="none",
        use_cpu=device_type() == "cpu",
    )
    state = TrainerState(global_step=start, max_steps=total, logging_steps=1)
    control = TrainerControl()
    sinks = [MetricsJsonlCallback(run.metrics_file, start), *trackers, *(callbacks or [])]

    def emit(event: str, **kw: Any) -> None:
        state.epoch = state.global_step / steps_per_pass
        for cb in sinks:
            if hasattr(cb, event):
                getattr(cb, event)(args, state, control, model=model, **kw)

    def eval_reward() -> float | None:
        """Mean reward of greedy replies to held-out prompts (no RNG used, so sampling is unaffected)."""
        if not eval_prompts:
            return None
        q, qm = encode_prompts(tokenizer, eval_prompts, device)
        with autocast():
            resp, mask = sample(model, tokenizer, q, qm, obj.max_new_tokens, None, stop_ids)
        texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True).strip() for r, m in zip(resp, mask)]
        return round(score(fns, eval_prompts, texts).mean().item(), 6)

    run.stage_started("train")
    t0 = time.time()
    history: list[dict] = []
    eval_first = eval_last = None
    try:
        emit("on_train_begin")
        if start == 0 and (eval_first := eval_reward()) is not None:
            emit("on_log", logs={"eval_reward": eval_first})
        for step in range(start, total):
            row = iteration(
                model,
                ref_model,
                value_head,
                tokenizer,
                prompts,
                fns,
                optimizer,
                scheduler,
                params,
                step,
                recipe,
                stop_ids,
                autocast,
            )
            state.global_step = step + 1
            row["lr"] = scheduler.get_last_lr()[0]
            if eval_every and state.global_step % eval_every == 0 and state.global_step < total and eval_prompts:
                row["eval_reward"] = eval_reward()
            history.append(row)
            emit("on_log", logs=row)  # a callback may ask to stop here: checkpoint first
            if state.global_step % save_every == 0 or state.global_step == total or control.should_training_stop:
                save_checkpoint(
                    run.checkpoints_dir,
                    state.global_step,
                    model,
                    value_head,
                    optimizer,
                    scheduler,
                    cfg.save_total_limit,
                )
            if control.should_training_stop:
                break
        if (eval_last := eval_reward()) is not None:
            emit("on_log", logs={"eval_reward": eval_last})
        emit("on_train_end")
        elapsed = time.time() - t0
        # the result is saved like every objective's (its checkpoints above are PPO's own format)
        out_dir = save_result(run, tokenizer, model=model, extra_files=value_head_writer(value_head))
    except BaseException as exc:
        run.stage_finished("train", "failed", error=f"{type(exc).__name__}: {exc}")
        raise
    rewards = [h["reward_mean"] for h in history]
    k = max(1, min(3, len(rewards) // 3))  # single batches are noisy: compare the first and last few
    info = {
        "params": counts,
        "steps": state.global_step,
        "steps_this_session": len(history),
        "optimizer_steps": state.global_step * obj.ppo_epochs,
        "prompts": len(prompts),
        "reward": {
            "model": obj.reward_model,
            "functions": list(obj.reward_functions)
            if not reward_fns
            else [getattr(f, "__name__", repr(f)) for f in fns],
        },
        "reward_first": round(sum(rewards[:k]) / k, 5) if rewards else None,
        "reward_last": round(sum(rewards[-k:]) / k, 5) if rewards else None,
        "eval_reward_before": eval_first,
        "eval_reward_after": eval_last,
        "kl_last": history[-1]["kl"] if history else None,
        "seconds": round(elapsed, 1),
        "bf16_autocast": bf16,
        "base_weights_dtype": setup.base_dtype,
        "resumed_from": checkpoint,
        "output": str(out_dir.relative_to(run.path)),
    }
    run.stage_finished("train", **info)
    return info


def iteration(
    model: Any,
    ref_model: Any | None,
    value_head: ValueHead,
    tokenizer: Any,
    prompts: list[Prompt],
    fns: list[Callable],
    optimizer: Any,
    scheduler: Any,
    params: list,
    step: int,
    recipe: Any,
    stop_ids: list[int],
    autocast: Callable,
) -> dict:
    """One PPO iteration: rollout, score, advantages, `ppo_epochs` optimiser steps. Returns its stats."""
    cfg, obj = recipe.training, recipe.objective
    device = next(model.parameters()).device
    batch = [prompts[i] for i in batch_indices(len(prompts), step, cfg.batch_size, cfg.seed)]
    query, query_mask = encode_prompts(tokenizer, batch, device)
    with autocast():
        response, mask = sample(model, tokenizer, query, query_mask, obj.max_new_tokens, obj.temperature, stop_ids)
    texts = [tokenizer.decode(r[m.bool()], skip_special_tokens=True).strip() for r, m in zip(response, mask)]
    ro = Rollout(query, query_mask, response, mask.to(device), texts, score(fns, batch, texts).to(device))

    # old log-probs, values and reference log-probs, in the micro-batches the update uses so
    # the first ratio is exactly 1 (padding, and so the numerics, is the same)
    parts = micro_slices(len(batch), cfg.gradient_accumulation)
    old_logp, old_values, ref_logp = [], [], []
    model.eval()  # no dropout in the rollout's statistics (nor in the update, below)
    with torch.no_grad(), autocast():
        for sl in parts:
            _, lp, v = forward(model, value_head, ro, obj.temperature, sl)
            old_logp.append(lp)
            old_values.append(v.float())
            with reference(model, ref_model) as ref:
                ref_logp.append(forward(ref, None, ro, obj.temperature, sl)[1])
    old_logp, old_values, ref_logp = torch.cat(old_logp), torch.cat(old_values), torch.cat(ref_logp)
    rewards, kl = core.shaped_rewards(ro.scores, old_logp, ref_logp, ro.mask, obj.kl_coef)
    adv, returns = core.gae(rewards, old_values, ro.mask, obj.gamma, obj.lam)
    adv = core.whiten(adv, ro.mask)

    # the update also runs in eval mode: with dropout on, the first ratio would not be 1 and the
    # clipping would act on dropout noise instead of on policy change
    n_tokens = ro.mask.sum().clamp(min=1)
    sums: dict[str, float] = {}
    for _ in range(obj.ppo_epochs):
        optimizer.zero_grad(set_to_none=True)
        for sl in parts:
            with autocast():
                logits, lp, v = forward(model, value_head, ro, obj.temperature, sl)
            m = ro.mask[sl]
            pg, pg_stats = core.policy_loss(lp, old_logp[sl], adv[sl], m, obj.clip_range)
            vf, vf_stats = core.value_loss(v.float(), old_values[sl], returns[sl], m, obj.clip_range)
            share = m.sum() / n_tokens  # micro-batch means, weighted to the mean over the whole batch
            ((pg + obj.vf_coef * vf) * share).backward()
            with torch.no_grad():
                stats = {
                    "policy_loss": pg,
                    "value_loss": vf,
                    "entropy": core.masked_mean(core.entropy(logits), m),
                    **pg_stats,
                    **vf_stats,
                }
            for key, val in stats.items():
                sums[key] = sums.get(key, 0.0) + float(val.detach()) * float(share) / obj.ppo_epochs
        grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        optimizer.step()
        scheduler.step()
    lengths = ro.mask.sum(1)
    row = {
        "reward_mean": ro.scores.mean().item(),
        "reward_std": ro.scores.std().item() if len(batch) > 1 else 0.0,
        "kl": kl.sum(1).mean().item(),  # KL(policy ‖ reference) per reply, summed over its tokens
        "non_score_reward": (rewards.sum(1) - ro.scores).mean().item(),
        **sums,
        "grad_norm": float(grad_norm),
        "response_length": lengths.float().mean().item(),
        "advantage_mean": core.masked_mean(adv, ro.mask).item(),
        "return_mean": core.masked_mean(returns, ro.mask).item(),
        "value_mean": core.masked_mean(old_values, ro.mask).item(),
    }
    return row
