"""The HF Trainer with two changes: bf16 autocast on CPU, and atomic checkpoints.

- transformers' `bf16=True` does nothing for a CPU run (it relies on accelerate, which
  does not autocast there), so autocast is entered here where the CPU has bf16 units.
  Master weights stay float32; only matmuls run in bf16.
- Trainer writes `checkpoint-N` in place, so a crash mid-save leaves a half-written
  folder that resume would pick up. Here it is written under `.staging/` and renamed.
"""

from __future__ import annotations

import os
import shutil

import torch
from transformers import Trainer
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, rotate_checkpoints

STAGING = ".staging"


class TuneforgeTrainer(Trainer):
    def __init__(self, *args, autocast_bf16: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.autocast_bf16 = autocast_bf16
        self._staging = False

    def autocast_smart_context_manager(self, cache_enabled: bool | None = True):
        if self.autocast_bf16:
            return torch.autocast(device_type=self.args.device.type, dtype=torch.bfloat16, cache_enabled=cache_enabled)
        return super().autocast_smart_context_manager(cache_enabled)

    def _get_output_dir(self, trial):
        out = super()._get_output_dir(trial)
        return os.path.join(out, STAGING) if self._staging else out

    def _save_checkpoint(self, model, trial):
        root = super()._get_output_dir(trial)
        name = f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
        staging_root = os.path.join(root, STAGING)
        shutil.rmtree(staging_root, ignore_errors=True)
        self._staging = True
        try:
            super()._save_checkpoint(model, trial)
        finally:
            self._staging = False
        staged, final = os.path.join(staging_root, name), os.path.join(root, name)
        best = self.state.best_model_checkpoint
        if best and os.path.normpath(best) == os.path.normpath(staged):
            self.state.best_model_checkpoint = final
            if self.args.should_save:  # the state inside the checkpoint must name the final path
                self.state.save_to_json(os.path.join(staged, "trainer_state.json"))
        if self.args.should_save:
            if os.path.exists(final):
                shutil.rmtree(final)
            os.replace(staged, final)
            shutil.rmtree(staging_root, ignore_errors=True)
            rotate_checkpoints(output_dir=root, save_total_limit=self.args.save_total_limit,
                               best_model_checkpoint=self.state.best_model_checkpoint)


def last_checkpoint(checkpoints_dir: str) -> str | None:
    """The newest complete checkpoint (staged, unfinished ones are never considered)."""
    if not os.path.isdir(checkpoints_dir):
        return None
    done = [d for d in os.listdir(checkpoints_dir) if d.startswith(PREFIX_CHECKPOINT_DIR + "-")
            and os.path.isfile(os.path.join(checkpoints_dir, d, "trainer_state.json"))]
    if not done:
        return None
    return os.path.join(checkpoints_dir, max(done, key=lambda d: int(d.rsplit("-", 1)[-1])))


