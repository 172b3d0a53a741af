"""Loading a model folder runs no code nobody allowed (issue 17, defect 11).

* Pickle weights (.bin/.pt) are never unpickled: a gadget whose unpickling would create a
  sentinel file sits where every loader could find it, and torch.load is patched to ignore
  `weights_only` (what a torch without a safe unpickler does): every loader refuses and the
  sentinel never appears.
* Custom modelling code (`auto_map` in a model folder) runs only with the opt-in of whoever runs
  the command (TUNEFORGE_TRUST_REMOTE_CODE / --trust-remote-code), never because a run's own
  recipe.yaml says `model.trust_remote_code: true`: refused on every entry point (train, serve
  plan, chat, export) with an error naming the file and the flag; the custom code would create a
  sentinel file on import, and it never appears.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from conftest import tiny_recipe

from tuneforge.lm.load import (
    REMOTE_CODE_ENV,
    REMOTE_CODE_FLAG,
    PickleWeightsRefused,
    RemoteCodeRefused,
    load_adapter,
    load_model,
    load_pretrained,
    load_tokenizer,
)


@pytest.fixture(autouse=True)
def _no_opt_in(monkeypatch):
    monkeypatch.delenv(REMOTE_CODE_ENV, raising=False)


# --------------------------------------------------------------------------- folders and runs


class Gadget:
    """Unpickling this runs `code` (pickle calls whatever callable __reduce__ names)."""

    def __init__(self, code: str):
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


def write_gadget(path: Path, sentinel: Path) -> Path:
    import torch

    code = f"open({str(sentinel)!r}, 'w').write('pickle ran')"
    torch.save({"model.embed_tokens.weight": Gadget(code)}, path)
    return path


@pytest.fixture
def sentinel(tmp_path) -> Path:
    return tmp_path / "SENTINEL"


@pytest.fixture
def unsafe_torch_load(monkeypatch):
    """torch.load as on a torch whose weights_only unpickler can be bypassed: it unpickles anything."""
    import torch

    real = torch.load

    def load(*args, **kwargs):
        kwargs["weights_only"] = False
        return real(*args, **kwargs)

    monkeypatch.setattr(torch, "load", load)
    return load


def copy_model(src: Path, dst: Path, weights: bool = True) -> Path:
    shutil.copytree(src, dst, ignore=None if weights else shutil.ignore_patterns("*.safetensors"))
    return dst


def make_adapter_dir(model_dir: Path, out: Path, tokenizer_from: Path) -> Path:
    from deploy.helpers import make_adapter

    make_adapter(model_dir, out, seed=3)
    for f in tokenizer_from.iterdir():
        if f.name.startswith(("tokenizer", "chat_template", "special_tokens")):
            shutil.copy(f, out / f.name)
    return out


def make_run(tmp_path: Path, base: Path, adapter_src: Path, files: dict, name: str, trust_in_recipe: bool = True):
    """A trained-looking run on `base` whose adapter/ is a copy of `adapter_src`; its recipe asks
    for remote code (the value a hostile or careless recipe would carry)."""
    from tuneforge.model.source import record_lineage
    from tuneforge.model.sources import resolve
    from tuneforge.run import RunDir

    recipe = tiny_recipe(tmp_path, base, files, name=name, model={"trust_remote_code": trust_in_recipe})
    run = RunDir.create(recipe)
    record_lineage(run, resolve(str(base)))
    shutil.copytree(adapter_src, run.adapter_dir)
    return run


@pytest.fixture
def clean_adapter(tmp_path, tiny_model_dir) -> Path:
    return make_adapter_dir(tiny_model_dir, tmp_path / "clean-adapter", tiny_model_dir)


# --------------------------------------------------------------------------- pickle gadgets


def test_the_gadget_is_live_under_the_patched_torch_load(tmp_path, sentinel, unsafe_torch_load):
    """Positive control: without the guards, loading the file would run its code."""
    import torch

    write_gadget(tmp_path / "g.bin", sentinel)
    torch.load(tmp_path / "g.bin")
    assert sentinel.read_text() == "pickle ran"


@pytest.fixture
def pickle_only_model(tmp_path, tiny_model_dir, sentinel) -> Path:
    folder = copy_model(tiny_model_dir, tmp_path / "pickle-model", weights=False)
    write_gadget(folder / "pytorch_model.bin", sentinel)
    return folder


@pytest.fixture
def pickle_only_adapter(tmp_path, clean_adapter, sentinel) -> Path:
    folder = tmp_path / "pickle-adapter"
    shutil.copytree(clean_adapter, folder, ignore=shutil.ignore_patterns("*.safetensors"))
    write_gadget(folder / "adapter_model.bin", sentinel)
    return folder


def _base_loaders(folder: Path, tmp_path: Path):
    from transformers import AutoModelForSequenceClassification

    from tuneforge.deploy.server.launch import plan
    from tuneforge.model.load import load_for_training
    from tuneforge.recipe import ModelConfig, section

    return {
        "lm.load_model": lambda: load_model(str(folder)),
        "reward model (load_pretrained)": lambda: load_pretrained(
            AutoModelForSequenceClassification, str(folder), num_labels=1
        ),
        "train (load_for_training)": lambda: load_for_training(
            ModelConfig(base=str(folder)), section("strategy", kind="lora", r=4), str(folder)
        ),
        "serve plan": lambda: plan(str(folder), []),
    }


@pytest.mark.parametrize(
    "entry", ["lm.load_model", "reward model (load_pretrained)", "train (load_for_training)", "serve plan"]
)
def test_pickle_only_model_is_refused_and_never_unpickled(
    entry, pickle_only_model, tmp_path, sentinel, unsafe_torch_load
):
    with pytest.raises(PickleWeightsRefused) as err:
        _base_loaders(pickle_only_model, tmp_path)[entry]()
    assert "pytorch_model.bin" in str(err.value) and "safetensors" in str(err.value)
    assert not sentinel.exists()


def test_gadgets_next_to_safetensors_are_never_opened(tmp_path, tiny_model_dir, sentinel, unsafe_torch_load):
    folder = copy_model(tiny_model_dir, tmp_path / "mixed")
    for name in ("pytorch_model.bin", "training_args.bin", "optimizer.pt", "rng_state.pth"):
        write_gadget(folder / name, sentinel)
    model = load_model(str(folder))
    tok = load_tokenizer(str(folder))
    assert model.config.num_hidden_layers >= 1 and len(tok) > 0
    assert not sentinel.exists()


@pytest.mark.parametrize("entry", ["load_adapter", "serve plan", "load_trained", "chat", "export"])
def test_pickle_only_adapter_is_refused_and_never_unpickled(
    entry, tmp_path, tiny_model_dir, pickle_only_adapter, demo_subset, sentinel, unsafe_torch_load
):
    from tuneforge.deploy.chat import ChatSession
    from tuneforge.deploy.export import export
    from tuneforge.deploy.server.launch import plan
    from tuneforge.model.load import load_trained

    run = make_run(tmp_path, tiny_model_dir, pickle_only_adapter, demo_subset, "pickled", trust_in_recipe=False)
    calls = {
        "load_adapter": lambda: load_adapter(load_model(str(tiny_model_dir)), str(pickle_only_adapter)),
        "serve plan": lambda: plan(str(tiny_model_dir), [f"a={pickle_only_adapter}"]),
        "load_trained": lambda: load_trained(run),
        "chat": lambda: ChatSession(run),
        "export": lambda: export(run, formats=["adapter"]),
    }
    with pytest.raises(PickleWeightsRefused) as err:
        calls[entry]()
    assert "adapter_model.bin" in str(err.value)
    assert not sentinel.exists()


def test_a_run_on_a_pickle_only_base_is_refused_by_chat_and_export(
    tmp_path, pickle_only_model, clean_adapter, demo_subset, sentinel, unsafe_torch_load
):
    from tuneforge.deploy.chat import ChatSession
    from tuneforge.deploy.export import export

    run = make_run(tmp_path, pickle_only_model, clean_adapter, demo_subset, "on-pickle", trust_in_recipe=False)
    for call in (lambda: ChatSession(run), lambda: export(run, formats=["adapter"])):
        with pytest.raises(PickleWeightsRefused):
            call()
    assert not sentinel.exists()


# --------------------------------------------------------------------------- custom code (auto_map)


@pytest.fixture
def code_sentinel(tmp_path) -> Path:
    return tmp_path / "CODE_RAN"


def add_custom_code(folder: Path, sentinel: Path, where: str) -> Path:
    """auto_map in config.json (a model class) or tokenizer_config.json (a tokenizer class)
    pointing at a module that writes `sentinel` when imported."""
    (folder / "modeling_evil.py").write_text(
        f"import pathlib\npathlib.Path({str(sentinel)!r}).write_text('custom code ran')\n"
        "from transformers import LlamaForCausalLM, PreTrainedTokenizerFast\n\n\n"
        "class EvilForCausalLM(LlamaForCausalLM):\n    pass\n\n\n"
        "class EvilTokenizer(PreTrainedTokenizerFast):\n    pass\n"
    )
    f = folder / where
    cfg = json.loads(f.read_text())
    cfg["auto_map"] = (
        {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
        if where == "config.json"
        else {"AutoTokenizer": [None, "modeling_evil.EvilTokenizer"]}
    )
    f.write_text(json.dumps(cfg))
    return folder


@pytest.fixture(params=["config.json", "tokenizer_config.json"])
def custom_model(request, tmp_path, tiny_model_dir, code_sentinel) -> Path:
    """The tiny model (tests/assets config) copied with auto_map added."""
    folder = copy_model(tiny_model_dir, tmp_path / f"custom-{request.param.split('.')[0]}")
    return add_custom_code(folder, code_sentinel, request.param)


def _refused(call, where: Path) -> str:
    with pytest.raises(RemoteCodeRefused) as err:
        call()
    msg = str(err.value)
    assert str(where) in msg and REMOTE_CODE_FLAG in msg and REMOTE_CODE_ENV in msg
    return msg


def test_custom_code_is_refused_by_every_loader_without_the_opt_in(
    custom_model, tmp_path, clean_adapter, demo_subset, code_sentinel
):
    from tuneforge.deploy.chat import ChatSession
    from tuneforge.deploy.export import export
    from tuneforge.deploy.server.launch import plan
    from tuneforge.model.load import load_for_training, load_trained
    from tuneforge.recipe import ModelConfig, section

    where = next(
        f for f in (custom_model / "config.json", custom_model / "tokenizer_config.json") if "auto_map" in f.read_text()
    )
    asked = ModelConfig(base=str(custom_model), trust_remote_code=True)  # a recipe asking is no opt-in
    run = make_run(tmp_path, custom_model, clean_adapter, demo_subset, "custom", trust_in_recipe=True)
    entries = {
        "lm.load_model": lambda: load_model(str(custom_model), "float32", True),
        "lm.load_tokenizer": lambda: load_tokenizer(str(custom_model), True),
        "train (load_for_training)": lambda: (
            load_tokenizer(str(custom_model), True),  # what train.setup loads first
            load_for_training(asked, section("strategy", kind="lora", r=4), str(custom_model)),
        ),
        "serve the base": lambda: plan(str(custom_model), []),
        "serve RUN": lambda: plan(str(run.path), []),
        "serve an adapter of the run": lambda: plan(None, [str(run.adapter_dir)]),
        "chat RUN": lambda: ChatSession(run),
        "export RUN": lambda: export(run, formats=["adapter"]),
        "load_trained": lambda: load_trained(run),
    }
    for name, call in entries.items():
        msg = _refused(call, where)
        assert "not an opt-in" in msg or name.startswith("serve"), name
    assert not code_sentinel.exists()


def test_training_a_recipe_that_asks_for_remote_code_is_refused(
    monkeypatch, tmp_path, tiny_model_dir, demo_subset, code_sentinel
):
    """The real train entry points (prepare_stage, then train_run) on a base with custom model code."""
    from tuneforge.pipeline import prepare_stage
    from tuneforge.train.dispatch import train_run

    folder = add_custom_code(copy_model(tiny_model_dir, tmp_path / "custom"), code_sentinel, "config.json")
    recipe = tiny_recipe(
        tmp_path, folder, demo_subset, name="custom-train", model={"trust_remote_code": True}, training={"max_steps": 1}
    )
    _refused(lambda: prepare_stage(recipe), folder / "config.json")  # it loads the folder's tokenizer
    monkeypatch.setenv(REMOTE_CODE_ENV, "1")  # the operator allowed it for this command only
    run, _ = prepare_stage(recipe, overwrite=True)
    monkeypatch.delenv(REMOTE_CODE_ENV)
    _refused(lambda: train_run(run), folder / "config.json")
    assert not code_sentinel.exists()


def test_the_opt_in_of_whoever_runs_the_command_allows_it(monkeypatch, tmp_path, tiny_model_dir, code_sentinel):
    """Positive control: with the opt-in the custom code is trusted (and really runs), so the
    refusals above are the guard's doing, not a broken fixture."""
    import transformers.dynamic_module_utils as dmu

    from tuneforge.deploy.server.launch import plan

    folder = add_custom_code(copy_model(tiny_model_dir, tmp_path / "custom"), code_sentinel, "config.json")
    assert plan(str(folder), [], trust_remote_code=True).trust_remote_code is True
    monkeypatch.setenv(REMOTE_CODE_ENV, "1")
    assert plan(str(folder), []).trust_remote_code is True
    monkeypatch.setattr(dmu, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))  # keep ~/.cache clean
    model = load_model(str(folder))
    assert type(model).__name__ == "EvilForCausalLM" and code_sentinel.read_text() == "custom code ran"


def test_a_runs_recipe_cannot_switch_remote_code_on(tmp_path, tiny_model_dir, clean_adapter, demo_subset):
    """No auto_map: nothing to trust, whatever the run's recipe.yaml says (serve RUN, serve -a RUN)."""
    from tuneforge.deploy.server.launch import plan

    run = make_run(tmp_path, tiny_model_dir, clean_adapter, demo_subset, "asks", trust_in_recipe=True)
    assert run.recipe().model.trust_remote_code is True
    assert plan(str(run.path), []).trust_remote_code is False
    assert plan(None, [str(run.path)]).trust_remote_code is False
