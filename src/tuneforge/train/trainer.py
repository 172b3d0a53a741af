"""The HF Trainer with these changes, each measured in bench/train_throughput.py:

- transformers' `bf16=True` does nothing for a CPU run (it relies on accelerate, which
  does not autocast there), so autocast is entered here where the CPU has bf16 units.
  Master weights stay float32; only matmuls run in bf16.
- Logits only where a label is: the LM head over a 49k vocabulary is a large share of
  the cost and prompt positions carry no loss, so the head runs on labelled positions
  only (through the model's own `logits_to_keep`, so DDP/FSDP wrapping still applies).
- Fused training ops (`train/fused.py`: LoRA linear, RMSNorm, SwiGLU with hand-written
  backward) replace those modules' forwards for the whole of `train()`.
- Real (non-pad) tokens are counted, and tokens/s is logged with the loss.
- `training.kl_to_base` (β > 0): the training loss adds β · KL(tuned ‖ base) per trained token,
  the base being the same model with its adapter off (`lm/loss.py::label_positions_loss_with_kl`);
  the KL is logged as `kl_to_base`.
- Examples seen again (later epochs, validation) start at the lowest trained layer from the
  hidden states kept the first time (`train/frozen_cache.py`) when the layers below are frozen.
- Trainer writes `checkpoint-N` in place, so a crash mid-save leaves a half-written
  folder that resume would pick up. Here it is written under `.staging/` and renamed.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
import time
from collections import Counter
from pathlib import Path

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

from ..errors import TuneforgeError
from ..io import maybe_disk_full, replace_dir
from ..lm.loss import label_positions_loss, label_positions_loss_with_kl
from . import attention
from .checkpoint import newest_verified, write_manifest
from .frozen_cache import FrozenCache, why_not

STAGING = ".staging"


def plain_lora_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """PEFT LoRA layers without a variant (DoRA etc.), or [] if the model has any other tuner layer."""
    try:
        from peft.tuners.lora import LoraLayer
        from peft.tuners.tuners_utils import BaseTunerLayer
    except ImportError:
        return []
    layers = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    if not all(isinstance(m, LoraLayer) and not getattr(m, "lora_variant", None) for m in layers):
        return []
    return layers


@contextlib.contextmanager
def bf16_autocast(
    model: torch.nn.Module,
    device_type: str,
    cache_enabled: bool | None = True,
    layers: list[torch.nn.Module] | None = None,
):
    """bf16 autocast, with PEFT's cast of each LoRA layer's input to the fp32 adapter dtype off.

    PEFT casts a LoRA layer's input to its (fp32) adapter weights' dtype; under autocast
    that fp32 copy is cast straight back to bf16 by the LoRA matmul, and autograd keeps
    both copies for backward: with 7 LoRA layers per block they were about two thirds of
    the activation memory (measured on SmolLM2-135M, 8×512 tokens: 5.4 → 2.9 GB for the
    transformer body). Autocast already runs these matmuls in bf16, so the cast changes
    nothing but memory and time.
    """
    layers = plain_lora_layers(model) if layers is None else layers
    saved = [getattr(m, "cast_input_dtype_enabled", True) for m in layers]
    for m in layers:
        m.cast_input_dtype_enabled = False
    try:
        with torch.autocast(device_type=device_type, dtype=torch.bfloat16, cache_enabled=cache_enabled):
            yield
    finally:
        for m, v in zip(layers, saved):
            m.cast_input_dtype_enabled = v


def tokens_in_batch(inputs: dict) -> int:
    """Real tokens of a batch: padding not counted; in a packed row every example counts its whole
    length, a prefix shared with the others included (the row holds it once), so tokens/s
    compares with runs that do not share."""
    mask, pos = inputs.get("attention_mask"), inputs.get("position_ids")
    if mask is not None:
        return int(mask.sum())
    if pos is not None and pos.shape[0] == 1:
        return pos.shape[1] + sum(shared for _a, _b, shared in attention.segments(pos, pos.shape[1]))
    return int(inputs["input_ids"].numel())


class TuneforgeTrainer(Trainer):
    def __init__(
        self,
        *args,
        autocast_bf16: bool = False,
        logits_at_labels_only: bool = False,
        fused_ops: bool = False,
        kl_to_base: float = 0.0,
        frozen_cache: bool = False,
        **kwargs,
    ):
        super().__init__(*args, **kwargs)
        self._frozen_wanted = frozen_cache
        self._frozen: FrozenCache | None = None
        self._frozen_off: str | None = None if frozen_cache else "training.frozen_cache is off"
        self.kl_to_base = kl_to_base
        self._kl_sum: torch.Tensor | float = 0.0  # KL summed over the trained tokens since the last log
        self._kl_tokens = 0
        self.autocast_bf16 = autocast_bf16
        self.fused_ops = fused_ops
        self.fused_count: dict[str, int] = {}
        self.logits_at_labels_only = logits_at_labels_only
        self._staging = False
        self._lora_layers: list[torch.nn.Module] | None = None
        self._t_first: float | None = None
        self._tokens_at_first = 0

    def train(self, *args, **kwargs):
        """Trainer.train with `train/fused.py`'s forwards in place for the whole run (gradient
        checkpointing re-runs forwards during backward, which must see the same ops)."""
        if not self.fused_ops:
            return super().train(*args, **kwargs)
        from .fused import fusable, fused_forwards

        if self._lora_layers is None:
            self._lora_layers = plain_lora_layers(self.model)
        patches = fusable(self.model, self._lora_layers)
        self.fused_count = dict(Counter(fn.__name__ for _, fn in patches))
        with fused_forwards(patches):
            return super().train(*args, **kwargs)

    def _count_tokens(self, inputs) -> None:
        n = tokens_in_batch(inputs)
        if self._t_first is None:
            self._t_first, self._tokens_at_first = time.perf_counter(), self.state.num_input_tokens_seen
        self.state.num_input_tokens_seen += n

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        if model.training:
            self._count_tokens(inputs)
        # training only: eval_loss stays the plain held-out CE that early stopping and reports compare
        beta = self.kl_to_base if model.training else 0.0
        # the KL needs both passes' logits at the labelled positions: that is the label-only path,
        # whatever logits_at_labels_only says (pretrain turns it off only because it would skip nothing)
        if not (self.logits_at_labels_only or beta) or "labels" not in inputs:
            self.loss_is_scaled_for_ga = None
            return super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        inputs = dict(inputs)
        labels = inputs.pop("labels")
        cache = self._frozen_cache()
        with cache.forward(inputs) if cache else contextlib.nullcontext(inputs) as inputs:
            if beta:
                loss, kl_sum, n_targets, outputs = label_positions_loss_with_kl(model, inputs, labels, beta)
                self._kl_sum, self._kl_tokens = self._kl_sum + kl_sum, self._kl_tokens + n_targets  # no sync per step
            else:
                loss, n_targets, outputs = label_positions_loss(model, inputs, labels)
        if num_items_in_batch is not None:
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # num_items was summed over processes
            self.loss_is_scaled_for_ga = True
        else:
            loss = loss / max(n_targets, 1)
            self.loss_is_scaled_for_ga = False
        return (loss, outputs) if return_outputs else loss

    def _frozen_cache(self) -> FrozenCache | None:
        """The frozen-layer cache, decided on the first batch (the model is final by then)."""
        if self._frozen is None and self._frozen_off is None:
            lowest, self._frozen_off = why_not(self.model, self.args.world_size, self.args.neftune_noise_alpha)
            if self._frozen_off is None:
                self._frozen = FrozenCache(self.model, lowest)
        return self._frozen

    def frozen_cache_info(self) -> dict:
        """What the run's train summary says about the cache (`train/frozen_cache.py`)."""
        if self._frozen is not None:
            return self._frozen.summary()
        return {"off": self._frozen_off or "no batch went through the label-only loss"}

    def log(self, logs, start_time=None):
        if "loss" in logs and self._t_first is not None:
            elapsed = time.perf_counter() - self._t_first
            seen = self.state.num_input_tokens_seen - self._tokens_at_first
            logs = {**logs, "tokens_per_s": round(seen / elapsed, 1) if elapsed > 0 else None}
        if "loss" in logs and self.kl_to_base:
            logs = {**logs, "kl_to_base": self._mean_kl()}
        return super().log(logs, start_time)

    def _mean_kl(self) -> float | None:
        """Mean KL(tuned ‖ base) per trained token since the last log, over all processes; collective
        (every process logs the training loss at the same steps), and the sums start again."""
        kl = torch.as_tensor(self._kl_sum, dtype=torch.float64, device=self.args.device).reshape(1)
        sums = torch.cat([kl, torch.tensor([float(self._kl_tokens)], dtype=torch.float64, device=kl.device)])
        if self.args.world_size > 1:
            sums = self.accelerator.reduce(sums, reduction="sum")
        self._kl_sum, self._kl_tokens = 0.0, 0
        return round(float(sums[0] / sums[1]), 6) if sums[1] > 0 else None

    def tokens_this_session(self) -> int:
        return self.state.num_input_tokens_seen - self._tokens_at_first

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        if self.autocast_bf16:
            if self._lora_layers is None:  # the model's layers do not change during training: find them once
                self._lora_layers = plain_lora_layers(self.model)
            return bf16_autocast(self.model, self.args.device.type, cache_enabled, self._lora_layers)
        return super().autocast_smart_context_manager(cache_enabled)

    def _get_output_dir(self, trial):
        out = super()._get_output_dir(trial)
        return os.path.join(out, STAGING) if self._staging else out

    def _save_checkpoint(self, model, trial):
        root = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(root, STAGING)
        if self.args.should_save:
            shutil.rmtree(staging_root, ignore_errors=True)
        # Under DDP/ZeRO/FSDP every process writes into the staged folder (its own
        # rng_state_{rank}.pth, or its shards): none starts before the old staging is gone,
        # and the folder is renamed only after every process has finished writing.
        self.accelerator.wait_for_everyone()
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        except Exception as exc:  # the previous checkpoints are untouched: only the staging folder was written
            shutil.rmtree(staging_root, ignore_errors=True)
            kept = last_checkpoint(root)
            maybe_disk_full(
                root,
                exc,
                f"{name} under {root}",
                f"resume from {os.path.basename(kept)} (`tuneforge train RUN --resume`)" if kept else "train again",
            )
            raise
        finally:
            self._staging = False
        self.accelerator.wait_for_everyone()
        staged, final = os.path.join(staging_root, name), os.path.join(root, name)
        best = self.state.best_model_checkpoint
        if best and os.path.normpath(best) == os.path.normpath(staged):
            self.state.best_model_checkpoint = final
            if self.args.should_save:  # the state inside the checkpoint must name the final path
                self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        if self.args.should_save:
            # the manifest is written last: a checkpoint without one (or not matching it) is never resumed
            write_manifest(staged)
            replace_dir(Path(staged), Path(final))  # fsynced, then swapped in atomically
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(
                output_dir=root,
                save_total_limit=self.args.save_total_limit,
                best_model_checkpoint=self.state.best_model_checkpoint,
            )


class ResumeError(TuneforgeError, RuntimeError):
    pass


def checkpoint_to_resume(checkpoints_dir: Path, resume: bool, error: type[Exception] = ResumeError) -> str | None:
    """The checkpoint `--resume` continues from (`error` when there is none); without resume,
    the old checkpoints are cleared (by rank 0 only: it owns the run directory)."""
    from ..dist import is_main_process

    if resume:
        checkpoint = last_checkpoint(str(checkpoints_dir))
        if checkpoint is None:
            raise error(f"{checkpoints_dir}: no complete checkpoint to resume from — train without --resume")
        return checkpoint
    if is_main_process():
        shutil.rmtree(checkpoints_dir, ignore_errors=True)
    return None


def last_checkpoint(checkpoints_dir: str) -> str | None:
    """The newest checkpoint that verifies against its manifest (staged, unfinished or damaged ones
    are never used); every newer one skipped is reported on stderr."""
    return newest_verified(checkpoints_dir, warn=_warn)


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)
