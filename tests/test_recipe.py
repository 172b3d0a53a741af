import pytest

from tuneforge.recipe import RecipeError, apply_overrides, explain, load_recipe, recipe_from_dict


def test_defaults_are_valid_and_embedded():
    r = load_recipe(None)
    assert r.model.base == "smollm2-135m-instruct"
    assert r.strategy.kind == "lora" and r.objective.kind == "sft"


def test_misspelt_section_is_named_with_suggestion():
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict({"trainig": {"epochs": 1}})
    assert "trainig: unknown key" in str(exc.value)
    assert "did you mean 'training'" in str(exc.value)


def test_misspelt_nested_key_suggests_dotted_path():
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict({"training": {"learning_rat": 0.1}})
    assert "training.learning_rat" in str(exc.value)
    assert "did you mean 'training.learning_rate'" in str(exc.value)


def test_all_problems_reported_at_once():
    with pytest.raises(RecipeError) as exc:
        recipe_from_dict(
            {"model": {"bsae": "x"}, "training": {"epochs": "three", "scheduler": "cos"}, "strategy": {"r": 0}}
        )
    probs = exc.value.problems
    assert len(probs) == 4
    joined = "\n".join(probs)
    for key in ("model.bsae", "training.epochs", "training.scheduler", "strategy.r"):
        assert key in joined


def test_type_mismatch_rejected_not_coerced():
    with pytest.raises(RecipeError, match="training.batch_size"):
        recipe_from_dict({"training": {"batch_size": "8"}})


def test_dotted_overrides_parse_yaml_values(tmp_path):
    p = tmp_path / "r.yaml"
    p.write_text("name: x\ntraining:\n  epochs: 3\n")
    r = load_recipe(p, ["training.epochs=1", "strategy.r=4", "data.system_prompt=Be brief."])
    assert r.training.epochs == 1 and r.strategy.r == 4 and r.data.system_prompt == "Be brief."


def test_override_with_typo_is_an_error(tmp_path):
    with pytest.raises(RecipeError, match="did you mean 'training.epochs'"):
        load_recipe(None, ["training.epoch=1"])


def test_override_needs_equals():
    with pytest.raises(RecipeError, match="KEY=VALUE"):
        apply_overrides({}, ["training.epochs"])


def test_invalid_yaml_names_line(tmp_path):
    p = tmp_path / "bad.yaml"
    p.write_text("name: x\ntraining: [\n")
    with pytest.raises(RecipeError, match="line"):
        load_recipe(p)


def test_explain_lists_every_field_with_help():
    rows = explain()
    keys = {r[0] for r in rows}
    assert {"model.base", "training.epochs", "strategy.r", "data.max_length", "export.merged"} <= keys
    assert all(r[3] for r in rows), "every field has a one-line description"


def test_shipped_recipes_validate():
    from pathlib import Path

    for path in (Path(__file__).parent.parent / "recipes").glob("*.yaml"):
        load_recipe(path)


def test_recipe_hash_is_stable_and_sensitive():
    a, b = load_recipe(None), load_recipe(None, ["training.epochs=2"])
    assert a.sha256() == load_recipe(None).sha256() and a.sha256() != b.sha256()
