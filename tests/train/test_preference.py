"""Preference objectives (dpo, kto, orpo, reward, grpo) on the tiny model, the reward functions,
and the preference-accuracy metric against a hand computation."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import DEMO, ParamSnapshot, tiny_recipe, write_jsonl
from transformers import TrainerCallback

# --------------------------------------------------------------------------- helpers


Snapshot = ParamSnapshot


def assert_params(snap: Snapshot) -> None:
    assert snap.trainable, "nothing was trainable"
    unchanged = [n for n in snap.trainable if torch.equal(snap.before[n], snap.after[n])]
    assert not unchanged, f"trainable parameters that did not change: {unchanged}"
    moved = [n for n in snap.before if n not in snap.trainable and not torch.equal(snap.before[n], snap.after[n])]
    assert not moved, f"frozen parameters that changed: {moved}"


def demo_rows(name: str, n: int) -> list[dict]:
    return [json.loads(l) for l in (DEMO / name).read_text().splitlines()][:n]


def prepared(tmp_path, model_dir, kind: str, rows: list[dict], **sections):
    from tuneforge.pipeline import prepare_stage

    tmp_path.mkdir(parents=True, exist_ok=True)
    files = {"train": write_jsonl(tmp_path / f"{kind}.jsonl", rows), "test": None}
    training = {
        "epochs": 1,
        "max_steps": 6,
        "batch_size": 4,
        "learning_rate": 0.02,
        "warmup_ratio": 0.0,
        "eval_strategy": "no",
        "save_strategy": "steps",
        "save_steps": 3,
        "scheduler": "constant",
        **sections.pop("training", {}),
    }
    recipe = tiny_recipe(
        tmp_path,
        model_dir,
        files,
        name=kind,
        objective={"kind": kind, **sections.pop("objective", {})},
        data={"test": None, "test_fraction": 0.25, "validation_fraction": 0.0, "dedup": "exact", "leak_check": False},
        training=training,
        **sections,
    )
    run, _ = prepare_stage(recipe)
    return run


def losses(run) -> list[float]:
    return [r["loss"] for r in map(json.loads, run.metrics_file.read_text().splitlines()) if "loss" in r]


def probe(model, ids: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


# --------------------------------------------------------------------------- reward functions (no model)


def test_builtin_reward_functions():
    from tuneforge.train.rewards import RewardError, combined_reward, completion_text, reward_function

    conv = [{"role": "assistant", "content": "The app is called Hearthlink."}]
    assert reward_function("contains_expected")(
        ["q", "q", "q"], [conv, "hearthlink!", "no idea"], expected=[["Hearthlink"], "Hearthlink", ["Hearthlink"]]
    ) == [1.0, 1.0, 0.0]
    assert reward_function("contains_expected")(["q"], ["Nibsy the hedgehog"], expected=[["Nibsy", "otter"]]) == [0.5]
    assert reward_function("brevity")(["q", "q"], ["two words", " ".join(["w"] * 60)]) == [1.0, 0.0]
    assert (
        reward_function("no_repetition")(["q"], ["a b c a b c a b c"])[0]
        < reward_function("no_repetition")(["q"], ["a b c d e f g h i"])[0]
        == 1.0
    )
    assert reward_function("ends_cleanly")(["q", "q"], ["Done.", "cut off mid"]) == [1.0, 0.0]
    assert completion_text([{"role": "assistant", "content": "x"}]) == "x"
    with pytest.raises(RewardError, match="needs an 'expected' field"):
        reward_function("contains_expected")(["q"], ["a"])
    with pytest.raises(RewardError, match="available: contains_expected"):
        reward_function("nope")
    with pytest.raises(RewardError, match="no reward"):
        combined_reward(None, [])


# --------------------------------------------------------------------------- metric vs hand computation


def test_preference_accuracy_matches_hand_computation(tiny_model_dir, tiny_tokenizer):
    from transformers import AutoModelForCausalLM

    from tuneforge.evaluate.preference import accuracy, pair_logps, pairs_from_rows
    from tuneforge.lm.template import ensure_chat_template

    tok = ensure_chat_template(tiny_tokenizer)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()
    rows = [
        {
            "messages": [{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["chosen"]}],
            "rejected": [{"role": "assistant", "content": r["rejected"]}],
        }
        for r in demo_rows("preference.jsonl", 3)
    ]
    pairs = pairs_from_rows(rows)
    got = pair_logps(model, tok, pairs, batch_size=2)  # batched and padded

    def by_hand(prompt, completion):
        prefix = tok.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
        full = tok.apply_chat_template(prompt + completion, tokenize=False)
        ids = tok(full, add_special_tokens=False)["input_ids"]
        start = len(tok(prefix, add_special_tokens=False)["input_ids"])
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0].float(), -1)
        return sum(float(logp[i - 1, ids[i]]) for i in range(start, len(ids)))

    for side in ("chosen", "rejected"):
        want = [by_hand(p["prompt"], p[side]) for p in pairs]
        assert got[side] == pytest.approx(want, abs=1e-3)
    margins = [c - r for c, r in zip(got["chosen"], got["rejected"])]
    res = accuracy(got["chosen"], got["rejected"])
    assert res["accuracy"] == pytest.approx(round(sum(m > 0 for m in margins) / 3, 4))
    assert res["mean_margin"] == pytest.approx(sum(margins) / 3, abs=1e-3)
    # relative to itself as reference, every implicit margin is 0: no pair counts as preferred
    assert accuracy(got["chosen"], got["rejected"], ref=got)["accuracy"] == 0.0


# --------------------------------------------------------------------------- objectives


def test_dpo_trains_raises_margin_and_reloads(tmp_path, tiny_model_dir):
    from tuneforge.evaluate.preference import pair_logps, pairs_from_rows
    from tuneforge.evaluate.runner import evaluate
    from tuneforge.io import read_jsonl
    from tuneforge.model.load import load_trained
    from tuneforge.train.dispatch import train_run

    run = prepared(
        tmp_path,
        tiny_model_dir,
        "dpo",
        demo_rows("preference.jsonl", 24),
        objective={"beta": 0.5},
        evaluation={"max_new_tokens": 4, "generalisation": False},
    )
    snap = Snapshot()
    info = train_run(run, callbacks=[snap])
    assert_params(snap)
    ls = losses(run)
    assert ls[0] == pytest.approx(0.6931, abs=1e-3)  # policy == reference at step 1: -log σ(0)
    assert min(ls[1:]) < ls[0]
    # the implicit reward margin on the training pairs rose above the reference's (= 0)
    model, tok, _ = load_trained(run)
    pairs = pairs_from_rows(read_jsonl(run.split_file("train")))
    tuned = pair_logps(model, tok, pairs)
    with model.disable_adapter():
        base = pair_logps(model, tok, pairs)
    implicit = [
        (tc - tr) - (bc - br)
        for tc, tr, bc, br in zip(tuned["chosen"], tuned["rejected"], base["chosen"], base["rejected"])
    ]
    assert sum(implicit) / len(implicit) > 0
    # the saved adapter (only the trained one: TRL's frozen 'ref' copy is not used) gives the same outputs
    assert info["output"] == "adapter" and not (run.adapter_dir / "ref").exists()
    ids = torch.tensor([tok("What is the Quorvalen app called?")["input_ids"]])
    assert torch.allclose(probe(model, ids), probe(snap.model, ids), atol=1e-5)
    assert (
        sorted(p.name for p in run.checkpoints_dir.iterdir() if p.name.startswith("checkpoint-"))
        == ["checkpoint-3", "checkpoint-6"]
        and not (run.checkpoints_dir / ".staging").exists()
    )
    # evaluation reports base vs tuned preference accuracy on the held-out pairs
    report = evaluate(run)
    pref = report["preference"]
    assert pref["base"]["pairs"] == pref["tuned"]["pairs"] == len(pairs_from_rows(read_jsonl(run.split_file("test"))))
    assert "implicit_reward" in pref and "Preference (held-out pairs)" in (run.eval_dir / "report.md").read_text()


def test_kto_full_strategy_trains(tmp_path, tiny_model_dir):
    from tuneforge.train.dispatch import train_run

    run = prepared(
        tmp_path,
        tiny_model_dir,
        "kto",
        demo_rows("kto.jsonl", 24),
        strategy={"kind": "full"},
        training={"learning_rate": 0.002, "max_steps": 4, "save_steps": 4},
    )
    snap = Snapshot()
    info = train_run(run, callbacks=[snap])
    assert_params(snap)  # full: every weight trains; the frozen reference is a separate copy
    ls = losses(run)
    assert min(ls[1:]) < ls[0]
    assert info["output"] == "model" and (run.model_dir / "config.json").is_file()


def test_orpo_trains(tmp_path, tiny_model_dir):
    from tuneforge.train.dispatch import train_run

    run = prepared(tmp_path, tiny_model_dir, "orpo", demo_rows("preference.jsonl", 12), training={"max_steps": 4})
    snap = Snapshot()
    train_run(run, callbacks=[snap])
    assert_params(snap)
    ls = losses(run)
    assert ls[-1] < ls[0]
    assert (run.adapter_dir / "adapter_config.json").is_file()


def test_reward_model_trains_and_saves_plain_seq_cls(tmp_path, tiny_model_dir):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tuneforge.evaluate.runner import evaluate
    from tuneforge.train.dispatch import train_run
    from tuneforge.train.rewards import load_reward_fn

    run = prepared(
        tmp_path,
        tiny_model_dir,
        "reward",
        demo_rows("preference.jsonl", 24),
        training={"max_steps": 8, "learning_rate": 0.01},
    )
    snap = Snapshot()
    info = train_run(run, callbacks=[snap])
    assert_params(snap)  # LoRA adapters + the score head (modules_to_save); base weights frozen
    assert any("score" in n for n in snap.trainable)
    ls = losses(run)
    assert min(ls[2:]) < max(ls[:2])
    assert info["output"] == "model" and not run.adapter_dir.exists()
    # the contract: a plain seq-cls model (merged) giving one scalar per sequence
    rm_model = AutoModelForSequenceClassification.from_pretrained(run.model_dir).eval()
    assert rm_model.config.num_labels == 1 and rm_model.config.pad_token_id is not None
    assert not any("lora" in n for n, _ in rm_model.named_parameters())
    tok = AutoTokenizer.from_pretrained(run.model_dir)
    prompt = [{"role": "user", "content": "What is the Quorvalen app called?"}]
    answer = [{"role": "assistant", "content": "It is called Hearthlink."}]
    ids = tok.apply_chat_template(prompt + answer, tokenize=True, return_dict=True)["input_ids"]  # as TRL tokenises
    with torch.no_grad():
        direct = float(rm_model(input_ids=torch.tensor([ids])).logits[0, 0])
        trained = float(snap.model.eval()(input_ids=torch.tensor([ids])).logits[0, 0])
    rm = load_reward_fn(run.path)
    assert rm([prompt, "What is the Quorvalen app called?"], [answer, "It is called Hearthlink."]) == pytest.approx(
        [direct, direct], abs=1e-5
    )
    assert direct == pytest.approx(trained, abs=1e-4)  # merged == trained adapter + head
    report = evaluate(run)
    assert report["preference"]["reward_model"]["pairs"] > 0
    assert "Pairwise accuracy" in (run.eval_dir / "report.md").read_text()
    assert run.manifest()["stages"]["evaluate"]["metrics"]["pairwise_accuracy"] is not None


def test_grpo_trains_with_reward_model_and_functions(tmp_path, tiny_model_dir):
    import shutil

    from transformers import AutoModelForSequenceClassification

    from tuneforge.train.dispatch import train_run

    # a (random-headed) reward model in the reward-run layout: continuous scores, so every group
    # has a spread and a non-zero advantage (the rule-based rewards alone tie on a random model)
    torch.manual_seed(0)
    rm = AutoModelForSequenceClassification.from_pretrained(tiny_model_dir, num_labels=1)
    rm.config.pad_token_id = 0
    rm.save_pretrained(tmp_path / "rm" / "model")
    for f in tiny_model_dir.iterdir():
        if f.name.startswith(("tokenizer", "chat_template")):
            shutil.copy(f, tmp_path / "rm" / "model" / f.name)
    run = prepared(
        tmp_path,
        tiny_model_dir,
        "grpo",
        demo_rows("test.jsonl", 12),
        objective={
            "reward_model": str(tmp_path / "rm"),
            "reward_functions": ["contains_expected", "brevity"],
            "num_generations": 2,
            "max_new_tokens": 6,
            "kl_coef": 0.1,
        },
        training={"max_steps": 2, "batch_size": 2, "save_steps": 2},
    )
    snap = Snapshot()
    info = train_run(run, callbacks=[snap])
    assert_params(snap)
    assert info["first_reward"] is not None
    assert info["reward_functions"] == ["reward_model", "contains_expected", "brevity"]
    rows = [json.loads(l) for l in run.metrics_file.read_text().splitlines()]
    assert any("rewards/brevity/mean" in r and "kl" in r for r in rows)
    assert (run.adapter_dir / "adapter_config.json").is_file() and not (run.adapter_dir / "ref").exists()


def test_grpo_rejects_partial_groups(tmp_path, tiny_model_dir):
    from tuneforge.recipe import RecipeError

    with pytest.raises(RecipeError, match="multiple of objective.num_generations=3"):  # at load time now
        prepared(
            tmp_path,
            tiny_model_dir,
            "grpo",
            demo_rows("test.jsonl", 8),
            objective={"reward_functions": ["brevity"], "num_generations": 3},
            training={"batch_size": 4},
        )


class StopAt(TrainerCallback):
    """Stops training after `step` (the checkpoint of that step is still written): a killed run."""

    def __init__(self, step: int):
        self.step = step

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.step:
            control.should_training_stop = True


def test_dpo_resume_reproduces_uninterrupted_run(tmp_path, tiny_model_dir):
    from tuneforge.train.dispatch import train_run

    rows = demo_rows("preference.jsonl", 20)
    straight = prepared(tmp_path / "a", tiny_model_dir, "dpo", rows, training={"max_steps": 4, "save_steps": 2})
    train_run(straight)
    halves = prepared(tmp_path / "b", tiny_model_dir, "dpo", rows, training={"max_steps": 4, "save_steps": 2})
    train_run(halves, callbacks=[StopAt(2)])
    assert losses(halves) == losses(straight)[:2]
    info = train_run(halves, resume=True)
    assert info["resumed_from"].endswith("checkpoint-2") and info["steps_this_session"] == 2
    assert losses(halves) == losses(straight)  # exact on CPU: weights, optimiser, scheduler, RNG, data order
