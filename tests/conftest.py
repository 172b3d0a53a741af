"""Shared fixtures: a tiny Llama (built from tests/assets config) and small data files."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

ASSETS = Path(__file__).parent / "assets"
ROOT = Path(__file__).parent.parent
DEMO = ROOT / "examples" / "demo"

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def tiny_tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ASSETS / "tiny-tokenizer")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A local HF folder: random-init 2-layer Llama (seeded) + the tiny tokenizer."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    out = tmp_path_factory.mktemp("tiny-llama")
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(ASSETS / "tiny-llama"))
    model.save_pretrained(out)
    for f in (ASSETS / "tiny-tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    return out


# Test tiers (`make test-fast` runs the unit tier only; `make test` runs all of them):
#   unit        toy tensors, pure functions, parsers, HTTP apps over stubs: no model is trained
#   smoke       recipe smoke tests on the tiny model built from tests/assets (marked here, by fixture)
#   real_model  the embedded SmolLM2-135M-Instruct, few steps (marked in the module)
#   gpu         needs a CUDA GPU; skipped without one
TINY_MODEL_FIXTURES = {"tiny_model_dir"}  # every fixture that builds on it is found through the closure


def pytest_collection_modifyitems(config, items):
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        if names & TINY_MODEL_FIXTURES or item.get_closest_marker("smoke"):
            item.add_marker(pytest.mark.smoke)
        elif not item.get_closest_marker("real_model") and not item.get_closest_marker("gpu"):
            item.add_marker(pytest.mark.unit)


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture
def demo_subset(tmp_path) -> dict[str, Path]:
    """48 training rows and 8 test rows of the demo data (enough to see the loss fall)."""
    train = [json.loads(l) for l in (DEMO / "train.jsonl").read_text().splitlines()][:48]
    test = [json.loads(l) for l in (DEMO / "test.jsonl").read_text().splitlines()][:8]
    return {"train": write_jsonl(tmp_path / "train.jsonl", train), "test": write_jsonl(tmp_path / "test.jsonl", test)}


def tiny_recipe(tmp_path: Path, model_dir: Path, files: dict[str, Path], name: str = "tiny", **sections):
    from tuneforge.recipe import recipe_from_dict

    base = {
        "name": name,
        "output_dir": str(tmp_path / "runs"),
        "model": {"base": str(model_dir)},
        # replay off: a random tiny model's answers are noise that would change every test's data
        # and step counts; replay is tested where it is the subject (tests/data/test_forgetting_data.py)
        "data": {
            "train": str(files["train"]),
            "test": str(files["test"]),
            "validation_fraction": 0.15,
            "replay": {"enabled": False},
        },
        "strategy": {"kind": "lora", "r": 8, "alpha": 16},
        "training": {"epochs": 3, "batch_size": 4, "learning_rate": 0.05, "logging_steps": 1, "precision": "fp32"},
        "evaluation": {"max_new_tokens": 8, "batch_size": 8},
        "export": {"golden_count": 2, "golden_max_new_tokens": 8},
    }
    for key, val in sections.items():
        if key == "strategy" and val.get("kind", "lora") not in ("lora", "dora", "qlora"):
            base[key] = {}  # the tiny rank applies to LoRA kinds only
        base.setdefault(key, {}).update(val)
    return recipe_from_dict(base)


# CI runs Hypothesis with a fixed seed so a red build is always reproducible; local runs
# keep exploring new examples (and found real loader bugs that way).
try:
    from hypothesis import settings as _hsettings

    _hsettings.register_profile("ci", derandomize=True)
    if os.environ.get("CI"):
        _hsettings.load_profile("ci")
except ImportError:  # pragma: no cover
    pass


def _trainer_callback():
    from transformers import TrainerCallback

    return TrainerCallback


class ParamSnapshot(_trainer_callback()):
    """Every parameter before and after training, which were trainable, and the trained model."""

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        self.before = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.trainable = {n for n, p in model.named_parameters() if p.requires_grad}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.after = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.model = model
