"""One trainer plumbing: every objective saves through `fit.save_result` (shards gathered, written
aside then renamed), training reads the base the manifest recorded, and the time estimate times
the very setup training uses (within 25 % of training's own step time)."""

from __future__ import annotations

import ast
import json
import shutil
import statistics
from pathlib import Path

import pytest
import torch
from conftest import ASSETS, DEMO, tiny_recipe, write_jsonl
from safetensors.torch import load_file

from tuneforge.io import read_jsonl
from tuneforge.pipeline import prepare_stage
from tuneforge.run import RunDir
from tuneforge.train import fit, setup

TRAIN = Path(fit.__file__).parent
OBJECTIVES = ("sft", "pretrain", "dpo", "kto", "orpo", "reward", "grpo", "ppo")
QUICK = {
    "epochs": 1,
    "max_steps": 2,
    "batch_size": 4,
    "eval_strategy": "no",
    "save_strategy": "steps",
    "save_steps": 100,
    "threads": 1,
}


def _rows(name: str, n: int) -> list[dict]:
    return [json.loads(line) for line in (DEMO / name).read_text().splitlines()][:n]


def _run(tmp_path, model_dir, name: str, rows: list[dict], **sections) -> RunDir:
    files = {"train": write_jsonl(tmp_path / f"{name}.jsonl", rows), "test": None}
    recipe = tiny_recipe(
        tmp_path,
        model_dir,
        files,
        name=name,
        data={"test": None, "test_fraction": 0.25, "validation_fraction": 0.0, "plots": False, "leak_check": False},
        training={**QUICK, **sections.pop("training", {})},
        **sections,
    )
    return prepare_stage(recipe)[0]


# --------------------------------------------------------------------------- one save path


def _calls(path: Path) -> set[str]:
    """Names of everything a module calls (`f(...)` and `x.f(...)`)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call):
            f = node.func
            out.add(f.attr if isinstance(f, ast.Attribute) else getattr(f, "id", ""))
    return out


def test_only_fit_writes_a_trained_result():
    """No train module but fit.py saves weights; each objective reaches fit.save_result (directly,
    or through fit.fit / preference_common.train_policy, which call it)."""
    writers = sorted(p.name for p in TRAIN.glob("*.py") if "save_pretrained" in _calls(p) and p.name != "fit.py")
    assert writers == []
    assert "save_result" in _calls(TRAIN / "preference_common.py") and "save_result" in _calls(TRAIN / "fit.py")
    via = {"fit": "fit", "train_policy": "train_policy", "save_result": "save_result"}
    for name in OBJECTIVES:
        assert _calls(TRAIN / f"{name}.py") & set(via), f"{name}.py trains without fit / train_policy / save_result"


@pytest.fixture
def saves(monkeypatch):
    """Every result folder fit.save_result moves into place, and every shard gather it ran."""
    seen: dict[str, list] = {"final": [], "gathered": []}
    real_replace, real_gather = fit.replace_dir, fit.gathered_state_dict

    def replace(tmp, final):
        seen["final"].append(Path(final))
        return real_replace(tmp, final)

    def gather(trainer):
        seen["gathered"].append(trainer)
        return real_gather(trainer)

    monkeypatch.setattr(fit, "replace_dir", replace)
    monkeypatch.setattr(fit, "gathered_state_dict", gather)
    return seen


@pytest.mark.parametrize(
    "kind, data, result",
    [
        ("sft", "train.jsonl", "adapter"),
        ("dpo", "preference.jsonl", "adapter"),
        ("reward", "preference.jsonl", "model"),
    ],
)
def test_objectives_save_through_the_one_function(kind, data, result, tmp_path, tiny_model_dir, saves, monkeypatch):
    from tuneforge.train.dispatch import train_run

    run = _run(tmp_path, tiny_model_dir, kind, _rows(data, 16), objective={"kind": kind})
    resolved = []
    monkeypatch.setattr(setup, "resolve", lambda *a: resolved.append(a))  # prepare recorded the base already
    info = train_run(run)
    assert resolved == []
    out = run.path / result
    assert saves["final"] == [out] and len(saves["gathered"]) == 1  # every rank gathers, even one
    assert (
        info["output"] == result
        and (out / "config.json" if result == "model" else out / "adapter_config.json").is_file()
    )
    assert not list(run.path.glob(f".{result}.*"))  # the staging folder was renamed, none is left


def test_ppo_saves_its_result_through_it_and_keeps_its_checkpoints(tmp_path, tiny_model_dir, saves):
    from tuneforge.train import ppo

    run = _run(
        tmp_path,
        tiny_model_dir,
        "ppo",
        _rows("train.jsonl", 8),
        objective={"kind": "ppo", "max_new_tokens": 4, "reward_functions": ["brevity"]},
        training={"save_steps": 1},
    )
    info = ppo.train(run)
    assert saves["final"] == [run.adapter_dir] and saves["gathered"] == []  # one process: nothing to gather
    assert info["output"] == "adapter" and (run.adapter_dir / ppo.VALUE_HEAD_FILE).is_file()
    ckpt = run.checkpoints_dir / "checkpoint-2"
    assert {p.name for p in ckpt.iterdir()} == {
        "trainable.safetensors",
        ppo.VALUE_HEAD_FILE,
        "state.pt",
        "trainer_state.json",
        "tuneforge_checkpoint.json",  # the manifest the resume verifies (train/checkpoint.py)
    }


class _Accelerator:
    def __init__(self, state_dict):
        self.state_dict, self.gathered, self.waited = state_dict, [], 0

    def get_state_dict(self, wrapped):
        self.gathered.append(wrapped)
        return self.state_dict

    def unwrap_model(self, model):
        return model

    def wait_for_everyone(self):
        self.waited += 1


class _ShardedTrainer:
    """What save_result reads of an HF Trainer under ZeRO-3 / FSDP, with the gather recorded."""

    def __init__(self, model, state_dict, rank: int = 0, flag: str = "is_deepspeed_enabled"):
        self.model = self.model_wrapped = model
        self.accelerator = _Accelerator(state_dict)
        self.rank = rank
        setattr(self, flag, True)

    def is_world_process_zero(self):
        return self.rank == 0


def _lora(tiny_model_dir):
    from tuneforge.model.load import load_for_training
    from tuneforge.recipe import ModelConfig, Recipe

    strategy = Recipe().strategy.model_copy(update={"r": 4})
    return load_for_training(ModelConfig(base=str(tiny_model_dir)), strategy, str(tiny_model_dir))[0]


@pytest.mark.parametrize("flag", ["is_deepspeed_enabled", "is_fsdp_enabled"])
def test_sharded_save_writes_the_gathered_weights_on_rank_zero_only(flag, tmp_path, tiny_model_dir, tiny_tokenizer):
    model = _lora(tiny_model_dir)
    # the gathered weights differ from rank 0's own (a shard holds nothing of them under ZeRO-3)
    gathered = {k: torch.full_like(v, 0.5) if "lora_B" in k else v.clone() for k, v in model.state_dict().items()}
    run = RunDir(tmp_path / "run")
    other = _ShardedTrainer(model, gathered, rank=1, flag=flag)
    fit.save_result(run, tiny_tokenizer, trainer=other)
    assert other.accelerator.gathered == [model] and other.accelerator.waited == 1 and not run.path.exists()

    rank0 = _ShardedTrainer(model, gathered, flag=flag)
    assert fit.save_result(run, tiny_tokenizer, trainer=rank0) == run.adapter_dir
    saved = load_file(run.adapter_dir / "adapter_model.safetensors")
    b = [v for k, v in saved.items() if "lora_B" in k]
    assert b and all(torch.all(v == 0.5) for v in b)  # the gathered values, not rank 0's zeros
    assert not any("base_layer" in k for k in saved)  # the adapter only
    assert rank0.accelerator.waited == 1 and (run.adapter_dir / "tokenizer_config.json").is_file()


def test_merged_reward_model_from_gathered_weights(tmp_path, tiny_model_dir, tiny_tokenizer):
    """Under shards rank 0 merges on a replica loaded with the gathered weights: same model as merging in memory."""
    from transformers import AutoModelForSequenceClassification

    from tuneforge.recipe import ModelConfig, Recipe
    from tuneforge.train.reward import reward_model

    torch.manual_seed(0)
    strategy = Recipe().strategy.model_copy(update={"r": 4})
    model = reward_model(ModelConfig(base=str(tiny_model_dir)), strategy, str(tiny_model_dir), 0)
    gathered = {
        k: v + 0.05 if "lora_B" in k or "modules_to_save" in k else v.clone() for k, v in model.state_dict().items()
    }
    run = RunDir(tmp_path / "run")
    run.adapter_dir.mkdir(parents=True)  # an old result of another strategy: removed by the save
    assert fit.save_result(run, tiny_tokenizer, trainer=_ShardedTrainer(model, gathered), merge=True) == run.model_dir
    assert not run.adapter_dir.exists()
    saved = AutoModelForSequenceClassification.from_pretrained(run.model_dir).eval()
    assert not any("lora" in n for n, _ in saved.named_parameters())
    model.load_state_dict(gathered)
    expected = model.merge_and_unload().eval()
    ids = torch.tensor([[5, 17, 42, 99, 7]])
    with torch.no_grad():
        torch.testing.assert_close(saved(input_ids=ids).logits, expected(input_ids=ids).logits)


def test_a_failed_save_leaves_the_previous_result(tmp_path, tiny_model_dir, tiny_tokenizer):
    run = RunDir(tmp_path / "run")
    model = _lora(tiny_model_dir)
    fit.save_result(run, tiny_tokenizer, model=model)
    before = sorted(p.name for p in run.adapter_dir.iterdir())

    def crash(folder):
        raise KeyboardInterrupt("killed while saving")

    with pytest.raises(KeyboardInterrupt):
        fit.save_result(run, tiny_tokenizer, model=model, extra_files=crash)
    assert sorted(p.name for p in run.adapter_dir.iterdir()) == before
    assert [p.name for p in run.path.iterdir()] == ["adapter"]  # no staging folder left behind


# --------------------------------------------------------------------------- the model source


def test_training_source_reads_the_manifest_and_resolves_only_without_it(tmp_path, tiny_model_dir, monkeypatch):
    files = {"train": write_jsonl(tmp_path / "t.jsonl", _rows("train.jsonl", 8)), "test": None}
    recipe = tiny_recipe(tmp_path, tiny_model_dir, files, name="bare")
    run = RunDir.create(recipe)  # no prepare: the manifest has no base model yet
    calls = []
    real = setup.resolve
    monkeypatch.setattr(setup, "resolve", lambda *a: calls.append(a) or real(*a))
    first = setup.training_source(run, recipe.model)
    assert len(calls) == 1 and run.manifest()["base_model"]["sha256"] == first.sha256
    again = setup.training_source(run, recipe.model)
    assert len(calls) == 1 and again == first  # read back, not resolved (and hashed) again
    other = recipe.model.model_copy(update={"base": str(tiny_model_dir) + "/"})  # a recipe naming another base
    setup.training_source(run, other)
    assert len(calls) == 2


# --------------------------------------------------------------------------- the estimate times training's setup


@pytest.fixture(scope="module")
def tiny64_dir(tmp_path_factory) -> Path:
    """The tiny Llama at hidden 64: bitsandbytes' CPU 4-bit kernels need widths that are multiples of 64."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(ASSETS / "tiny-llama")
    cfg.hidden_size, cfg.intermediate_size, cfg.head_dim = 64, 128, 16
    out = tmp_path_factory.mktemp("tiny64")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(cfg).save_pretrained(out)
    for f in (ASSETS / "tiny-tokenizer").iterdir():
        shutil.copy(f, out / f.name)
    return out


def _similar_rows(tokenizer, n: int = 64) -> list[dict]:
    """`n` demo rows around the median length: every training batch then costs about the same, so
    training's step times are comparable with the estimate's few (length-grouped or random) ones."""
    from tuneforge.lm.template import tokenize_messages

    rows = _rows("train.jsonl", 10_000)
    order = sorted(rows, key=lambda r: len(tokenize_messages(tokenizer, r["messages"], "assistant")["input_ids"]))
    mid = len(order) // 2
    return order[mid - n // 2 : mid + n // 2]


# The estimate times 5 steps here (the median step speed; prepare's default is 2) so the test checks
# the setup, not the sampling noise of 2 steps on a shared machine. Measured spread of estimate /
# training step time (median of 7 steps after a warm-up) on the 2-core dev machine, 16 runs each:
# 5 steps: packed 0.91-1.08, padded 0.91-1.06, QLoRA 0.93-1.20; 2 steps (~28 runs each): packed
# 0.91-1.10, padded 0.90-1.21, QLoRA 0.77-1.35 (about one run in 25 outside 25 %). An estimate that
# repeated one batch (a warm kernel cache) was timed at 0.68-0.81 for QLoRA; the estimate before
# this setup was shared (fp32 base for QLoRA, always padded) at 0.42-0.49 for QLoRA.
# 0.35, not 0.25: a CI machine shares its 2 cores with other jobs, and one QLoRA run in ~25 fell
# outside 25 % there; 0.35 still fails the setup mismatches this test exists for (0.42-0.49).
TOLERANCE = 0.35


@pytest.mark.parametrize(
    "name, strategy, training",
    [
        ("packed", {"kind": "lora"}, {"packing": True}),
        ("padded", {"kind": "lora"}, {"packing": False}),
        ("qlora", {"kind": "qlora"}, {}),
    ],
)
def test_estimate_matches_the_measured_training_step(
    name, strategy, training, tmp_path, tiny_model_dir, tiny64_dir, tiny_tokenizer
):
    from tuneforge.train import sft
    from tuneforge.train.callbacks import StepTimer
    from tuneforge.train.estimate import recipe_time_estimate

    model_dir = tiny64_dir if name == "qlora" else tiny_model_dir
    training = {"max_steps": 8, "batch_size": 8, "threads": 1, **training}
    tries = []
    # up to 3 fresh runs: a setup mismatch is systematic and fails all of them; a burst of other
    # work on shared CI cores (seen: 1.55 once, the same case at 1.0 on the next run) fails one
    for attempt in range(3):
        where = tmp_path / f"try{attempt}"
        where.mkdir()
        run = _run(where, model_dir, name, _similar_rows(tiny_tokenizer), strategy=strategy, training=training)
        est = recipe_time_estimate(run.recipe(), tiny_tokenizer, steps=5)(read_jsonl(run.split_file("train")))
        timer = StepTimer()
        info = sft.train(run, callbacks=[timer])
        for key in ("packing", "bf16_autocast", "base_weights_dtype"):  # the same setup ...
            assert est[key] == info[key], key
        assert est["packing"] is (name != "padded") and est["base_weights_dtype"].startswith("nf4") is (name == "qlora")
        assert est["tokens_per_step"] == pytest.approx(statistics.median(timer.tokens[1:]), rel=0.1)
        steps = timer.seconds[1:]  # ... and about the same step time (the first step warms up)
        ratio = est["seconds_per_step"] / statistics.median(steps)
        tries.append(f"{ratio:.2f} (estimate {est['step_seconds']} s vs training {[round(s, 4) for s in steps]} s)")
        if abs(ratio - 1) <= TOLERANCE:
            break
    else:
        pytest.fail(f"{name}: estimate/measured outside ±{TOLERANCE} in 3 runs: " + "; ".join(tries))
