"""`strategy` and `objective` are one class per `kind`, and every cross-section rule runs at load time."""

from __future__ import annotations

import pytest
import yaml
from typer.testing import CliRunner

from tuneforge.cli import app
from tuneforge.recipe import RecipeError, explain, load_recipe, recipe_from_dict, section


def _problems(data: dict) -> list[str]:
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict(data)
    return exc.value.problems


def test_a_key_of_another_kind_names_the_kinds_it_applies_to():
    (msg,) = _problems({"strategy": {"kind": "full", "r": 8}})
    assert msg.startswith("strategy.r: not a setting of strategy.kind=full")
    assert "lora" in msg and "qlora" in msg and "change strategy.kind" in msg
    (msg,) = _problems({"objective": {"kind": "sft", "beta": 0.2}})
    assert "objective.beta" in msg and "dpo" in msg and "kto" in msg and "orpo" in msg


def test_a_typo_inside_a_kind_still_gets_the_closest_key():
    (msg,) = _problems({"strategy": {"kind": "qlora", "quant_compute_dtyp": "float32"}})
    assert "did you mean 'strategy.quant_compute_dtype'" in msg


def test_an_unknown_kind_lists_the_kinds_and_the_closest():
    (msg,) = _problems({"strategy": {"kind": "lorra"}})
    assert msg.startswith("strategy.kind: 'lorra' is not allowed") and "did you mean 'lora'" in msg
    assert "prefix" in msg and "ia3" in msg


def test_a_section_without_kind_is_the_default_kind():
    r = recipe_from_dict({"strategy": {"r": 4}, "objective": {}})
    assert (r.strategy.kind, r.strategy.r, r.objective.kind) == ("lora", 4, "sft")
    assert "num_virtual_tokens" not in r.to_dict()["strategy"]  # the resolved recipe holds its kind's keys only


def test_cross_section_rules_are_all_reported_at_load_time():
    problems = _problems(
        {
            "strategy": {"kind": "prefix"},
            "objective": {"kind": "ppo"},
            "training": {"packing": True, "gradient_checkpointing": True},
            "export": {"formats": []},
        }
    )
    joined = "\n".join(problems)
    for needle in (
        "training.packing=true with strategy.kind=prefix",
        "objective.kind=ppo has no reward",
        "strategy.kind=prefix is not supported by objective ppo",
        "training.gradient_checkpointing is not supported by objective ppo",
        "export.formats: nothing to export",
    ):
        assert needle in joined, joined
    assert len(problems) == 5


@pytest.mark.parametrize(
    "data,needle",
    [
        (
            {"objective": {"kind": "grpo", "reward_functions": ["brevity"]}, "training": {"batch_size": 6}},
            "multiple of objective.num_generations=4",
        ),
        ({"objective": {"kind": "kto"}, "training": {"batch_size": 1}}, "KTO needs at least 2 rows"),
        ({"objective": {"kind": "reward"}, "strategy": {"kind": "prompt"}}, "a reward model trains with one of"),
        ({"objective": {"kind": "dpo", "loss_type": "sigmod"}}, "'sigmod' is not a DPO loss"),
        ({"strategy": {"kind": "prompt"}, "export": {"formats": ["merged"]}}, "add 'adapter' to export.formats"),
        ({"strategy": {"kind": "freeze", "train_layers": None}}, "strategy.kind=freeze trains nothing"),
        ({"training": {"early_stopping_patience": 2, "eval_strategy": "no"}}, "early_stopping_patience needs"),
        ({"export": {"formats": ["merged"], "merged": False}}, "nothing to export"),
        ({"strategy": {"kind": "full"}, "training": {"kl_to_base": 0.1}}, "kl_to_base=0.1 with strategy.kind=full"),
        ({"objective": {"kind": "dpo"}, "training": {"kl_to_base": 0.1}}, "kl_to_base=0.1 with objective.kind=dpo"),
    ],
)
def test_each_cross_section_rule(data, needle):
    assert needle in "\n".join(_problems(data))


def test_a_run_directory_recipe_of_the_old_shape_still_loads(tmp_path):
    """Run directories written before the union hold every key of every kind."""
    old = recipe_from_dict({}).to_dict()
    old["strategy"].update(num_virtual_tokens=16, train_layers=2, quant_compute_dtype="auto")
    old["objective"].update(beta=0.1, block_size=512, ppo_epochs=2)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(old))
    with pytest.raises(RecipeError, match="not a setting of strategy.kind=lora"):
        load_recipe(path)  # a user's recipe stays strict
    assert load_recipe(path, resolved=True).strategy.r == 16


def test_section_builds_one_kind_with_its_defaults():
    assert section("strategy", kind="qlora").quant_compute_dtype == "auto"
    assert section("objective", kind="grpo").num_generations == 4


def test_explain_says_which_kinds_a_key_applies_to():
    rows = {key: help_ for key, _, _, help_ in explain()}
    assert rows["strategy.r"].startswith("[lora/dora, qlora]")
    assert rows["objective.num_generations"].startswith("[grpo]")
    assert "strategy.kind" in rows and "objective.kind" in rows


def test_the_cli_refuses_a_bad_recipe_before_any_run_directory_exists(tmp_path):
    recipe = tmp_path / "r.yaml"
    recipe.write_text(yaml.safe_dump({"name": "x", "output_dir": str(tmp_path / "runs")}))
    res = CliRunner().invoke(app, ["run", str(recipe), "export.formats=[]"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "export.formats: nothing to export" in res.output
    assert not (tmp_path / "runs").exists()
