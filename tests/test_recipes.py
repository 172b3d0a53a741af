"""Every shipped recipe loads, says how to launch it, and chains onto recipes that exist;
every shipped accelerate config is valid for the installed accelerate."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml
from conftest import ROOT

from tuneforge.recipe import kinds, load_recipe

RECIPES = ROOT / "recipes"
ACCELERATE = RECIPES / "accelerate"
RECIPE_FILES = sorted(p for p in RECIPES.rglob("*.yaml") if ACCELERATE not in p.parents)
ACCELERATE_FILES = sorted(ACCELERATE.glob("*.yaml"))


def header(path: Path) -> str:
    """The comment block a file starts with."""
    lines = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("#"):
            break
        lines.append(line)
    return "\n".join(lines)


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def test_recipes_are_found():
    assert RECIPE_FILES and ACCELERATE_FILES


@pytest.mark.parametrize("path", RECIPE_FILES, ids=_rel)
def test_recipe_loads_and_names_its_launch_command(path):
    recipe = load_recipe(path)  # strict: unknown keys / wrong types raise RecipeError
    head = header(path)
    assert head, f"{_rel(path)}: start the file with a comment saying what it does and how to launch it"
    # the command that runs this very file (tuneforge run/prepare/train ... recipes/<file>)
    assert re.search(rf"tuneforge \w+ {re.escape(_rel(path))}", head), (
        f"{_rel(path)}: the header comment needs the launch command, e.g. `tuneforge run {_rel(path)}`"
    )
    assert recipe.output_dir == "runs", "shipped recipes write under runs/ so chained recipes can find them"
    # the thread count is the machine's business (torch's default: one per physical core)
    assert recipe.training.threads is None, f"{_rel(path)}: drop training.threads from a shared recipe"


@pytest.mark.parametrize("section", ["strategy", "objective"])
def test_one_recipe_per_strategy_and_objective(section):
    for kind in kinds(section):
        path = RECIPES / f"{section}-{kind}.yaml"
        assert path.is_file(), f"missing {_rel(path)}: every {section}.kind ships a recipe"
        assert getattr(load_recipe(path), section).kind == kind, f"{_rel(path)} does not use {section}.kind={kind}"


def test_run_names_are_unique_and_chains_point_at_shipped_recipes():
    recipes = {p: load_recipe(p) for p in RECIPE_FILES}
    names = [r.name for r in recipes.values()]
    assert len(names) == len(set(names)), f"two recipes share a run directory: {sorted(names)}"
    produced = {f"runs/{r.name}" for r in recipes.values()}
    for path, r in recipes.items():
        # a recipe that starts from (or scores with) a previous run names one a shipped recipe makes
        parents = [v for v in (r.model.base, getattr(r.objective, "reward_model", None)) if v and v.startswith("runs/")]
        for parent in parents:
            assert parent.rstrip("/") in produced, f"{_rel(path)}: {parent} is made by no recipe in recipes/"
            assert "recipes/" in header(path), f"{_rel(path)}: the header should list the commands of its chain"


# --------------------------------------------------------------------------- accelerate configs


def _launch_dests() -> set[str]:
    from accelerate.commands.launch import launch_command_parser

    return {a.dest for a in launch_command_parser()._actions}


@pytest.mark.parametrize("path", ACCELERATE_FILES, ids=_rel)
def test_accelerate_config_is_valid_for_installed_accelerate(path):
    from accelerate.commands.config.config_args import ClusterConfig, load_config_from_file
    from accelerate.utils import DistributedType

    cfg = load_config_from_file(str(path))  # raises on keys this accelerate version does not know
    assert isinstance(cfg, ClusterConfig)
    assert cfg.distributed_type in (DistributedType.MULTI_GPU, DistributedType.DEEPSPEED, DistributedType.FSDP)
    assert cfg.num_processes >= 2 and cfg.num_machines == 1 and cfg.machine_rank == 0
    assert cfg.mixed_precision == "no"  # training.precision decides bf16 autocast, not accelerate
    # nested keys become `accelerate launch` arguments (fsdp_config keys with an fsdp_ prefix);
    # a key the launcher has no argument for would be silently ignored
    dests = _launch_dests()
    raw = yaml.safe_load(path.read_text())
    for section in ("deepspeed_config", "fsdp_config"):
        for key in raw.get(section, {}):
            name = key if section != "fsdp_config" or key.startswith("fsdp") else f"fsdp_{key}"
            assert name in dests, f"{_rel(path)}: {section}.{key} is not an accelerate launch option"
    if cfg.distributed_type == DistributedType.DEEPSPEED:
        # left to the recipe: "auto" lets the HF Trainer fill them from training.*
        assert not {"gradient_accumulation_steps", "gradient_clipping"} & set(cfg.deepspeed_config)
        if cfg.deepspeed_config["zero_stage"] == 3:  # the final save gathers the sharded weights
            assert cfg.deepspeed_config["zero3_save_16bit_model"] is True
    head = header(path)
    assert f"accelerate launch --config_file {_rel(path)}" in head
    assert f"tuneforge train runs/NAME --accelerate-config {_rel(path)}" in head
