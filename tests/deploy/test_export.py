"""Export (#6): formats, GGUF round trip through transformers' loader, golden checks, refusals.

A "trained" run here is the tiny Llama plus a random non-zero LoRA adapter (seconds),
so these tests exercise export without training.
"""

from __future__ import annotations

import copy
import json
import shutil

import numpy as np
import pytest
from conftest import tiny_recipe

from tuneforge.deploy.export import (
    EXACT,
    ExportError,
    ExportMismatch,
    Reference,
    Tolerance,
    compare_greedy,
    export,
    resolve_formats,
)
from tuneforge.deploy.gguf_export import modelfile_text, ollama_template, permute_rotary, write_gguf

from .helpers import make_adapter


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    """A prepared run whose result is a LoRA adapter on the tiny Llama (no training needed)."""
    from conftest import DEMO, write_jsonl

    from tuneforge.pipeline import prepare_stage

    tmp = tmp_path_factory.mktemp("export-run")
    rows = [json.loads(line) for line in (DEMO / "train.jsonl").read_text().splitlines()]
    files = {"train": write_jsonl(tmp / "train.jsonl", rows[:24]), "test": write_jsonl(tmp / "test.jsonl", rows[24:28])}
    recipe = tiny_recipe(tmp, tiny_model_dir, files, export={"gguf_types": ["f16", "q8_0"]})
    run, _ = prepare_stage(recipe)
    make_adapter(tiny_model_dir, run.adapter_dir, seed=7)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        shutil.copy(tiny_model_dir / f, run.adapter_dir / f)
    run.stage_finished("train")
    return run


@pytest.fixture(scope="module")
def tiny(tiny_model_dir):
    from tuneforge.lm.load import load_model, load_tokenizer

    return load_model(str(tiny_model_dir)), load_tokenizer(str(tiny_model_dir))


def _load_gguf(folder, name):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(folder), gguf_file=name, dtype=torch.float32)
    return model, AutoTokenizer.from_pretrained(str(folder), gguf_file=name)


def _reference(model, tok, prompts=("Where is my order?", "How do I reset my password?")):
    from tuneforge.lm.generate import greedy_token_ids, stop_token_ids

    prompts = list(prompts)
    return Reference(tok, prompts, greedy_token_ids(model, tok, prompts, 8), stop_token_ids(tok, model), 8)


# -- unit: permutation, formats, tolerance -------------------------------------------------------


@pytest.mark.parametrize("heads,kv", [(4, 4), (4, 2), (8, 1)])
def test_rotary_permutation_is_inverted_by_transformers_loader(heads, kv):
    from transformers.modeling_gguf_pytorch_utils import LlamaTensorProcessor

    head_dim, hidden = 8, 32
    rng = np.random.default_rng(0)
    q, k = rng.normal(size=(heads * head_dim, hidden)), rng.normal(size=(kv * head_dim, hidden))
    proc = LlamaTensorProcessor(config={"num_attention_heads": heads, "num_key_value_heads": kv})
    back_q = proc.process(permute_rotary(q, heads, heads), "blk.0.attn_q.weight").weights
    back_k = proc.process(permute_rotary(k, heads, kv), "blk.0.attn_k.weight").weights
    assert np.array_equal(back_q, q) and np.array_equal(back_k, k)
    assert not np.array_equal(permute_rotary(q, heads, heads), q)  # it really moves rows


def test_formats_accept_repeats_and_comma_lists():
    from tuneforge.recipe import ExportConfig

    cfg = ExportConfig()
    assert resolve_formats(None, cfg) == ["adapter", "merged"]
    assert resolve_formats(["gguf,merged", "adapter"], cfg) == ["adapter", "merged", "gguf"]
    assert resolve_formats(None, ExportConfig(merged=False)) == ["adapter"]
    with pytest.raises(ExportError, match="unknown export format"):
        resolve_formats(["onnx"], cfg)
    with pytest.raises(ExportError, match="nothing to export"):
        resolve_formats(None, ExportConfig(formats=[]))


def test_tolerance_is_exact_for_lossless_and_bounded_for_lossy(tiny):
    tok = tiny[1]
    ref, prompts = [[5, 6, 7], [8, 9, 10]], ["a", "b"]
    late = [[5, 6, 7], [8, 9, 11]]
    with pytest.raises(ExportMismatch, match=r"golden prompt 'b' at new token 2.*1/2 prompts identical"):
        compare_greedy(ref, late, prompts, tok, "GGUF f16", EXACT)
    assert compare_greedy(ref, late, prompts, tok, "GGUF q8_0", Tolerance(0.5, 1.0))["result"] == "within tolerance"
    with pytest.raises(ExportMismatch, match="first tokens agree"):
        compare_greedy(ref, [[5, 6, 7], [1, 9, 10]], prompts, tok, "GGUF q8_0", Tolerance(0.5, 1.0))


# -- GGUF ----------------------------------------------------------------------------------------


def test_gguf_f16_round_trip_through_transformers(tiny, tmp_path):
    model, tok = tiny
    info = write_gguf(model, tok, tmp_path / "m.gguf", "f16")
    assert info["pre"] == "gpt-2" and info["tokens"] == model.config.vocab_size
    loaded, gtok = _load_gguf(tmp_path, "m.gguf")

    # every tensor equals the original rounded to f16 (norms stay f32: exact)
    want, got = model.state_dict(), loaded.state_dict()
    assert set(got) == set(want)
    for name, t in want.items():
        expect = t.float() if t.dim() < 2 else t.half().float()
        assert got[name].equal(expect), name
    for key in (
        "hidden_size",
        "num_attention_heads",
        "num_key_value_heads",
        "num_hidden_layers",
        "intermediate_size",
        "tie_word_embeddings",
        "head_dim",
    ):
        assert getattr(loaded.config, key) == getattr(model.config, key), key
    assert loaded.config.rope_parameters["rope_theta"] == model.config.rope_parameters["rope_theta"]

    # the tokenizer comes back with the template, EOS and the same ids; greedy tokens identical
    assert gtok.chat_template == tok.chat_template and gtok.eos_token == tok.eos_token == "<|im_end|>"
    text = "<|im_start|>user\nWhere's order #1234? 2x faster!<|im_end|>\n"
    assert gtok(text, add_special_tokens=False)["input_ids"] == tok(text, add_special_tokens=False)["input_ids"]
    assert _reference(model, tok).verify(loaded, gtok, "GGUF f16")["result"] == "identical"


def test_gguf_q8_0_within_tolerance(tiny, tmp_path):
    model, tok = tiny
    write_gguf(model, tok, tmp_path / "q.gguf", "q8_0")
    loaded, gtok = _load_gguf(tmp_path, "q.gguf")
    w, q = (
        model.state_dict()["model.layers.0.mlp.up_proj.weight"],
        loaded.state_dict()["model.layers.0.mlp.up_proj.weight"],
    )
    assert not q.equal(w) and (q - w).abs().max() <= w.abs().max() / 127  # one int8 step per 32-block
    res = _reference(model, tok).verify(loaded, gtok, "GGUF q8_0", Tolerance(0.5, 1.0))
    assert res["result"] in ("identical", "within tolerance")


def test_altered_template_or_eos_fails_the_check(tiny, tmp_path):
    model, tok = tiny
    ref = _reference(model, tok)
    bad = copy.deepcopy(tok)
    bad.chat_template = tok.chat_template.replace("<|im_start|>assistant", "<|im_start|>bot")
    write_gguf(model, bad, tmp_path / "t.gguf", "f16")
    with pytest.raises(ExportMismatch, match=r"GGUF f16: chat template differs .* at character"):
        ref.verify(*_load_gguf(tmp_path, "t.gguf"), "GGUF f16")

    bad = copy.deepcopy(tok)
    bad.eos_token = "<|endoftext|>"
    write_gguf(model, bad, tmp_path / "e.gguf", "f16")
    with pytest.raises(ExportMismatch, match=r"EOS token is '<\|endoftext\|>'.*training used '<\|im_end\|>'"):
        ref.verify(*_load_gguf(tmp_path, "e.gguf"), "GGUF f16")


def test_ollama_template_is_derived_only_from_chatml(tiny):
    tok = copy.deepcopy(tiny[1])
    text = modelfile_text("model-f16.gguf", tok, [tok.eos_token_id])
    assert "FROM ./model-f16.gguf" in text and 'PARAMETER stop "<|im_end|>"' in text
    assert "{{ .Content }}<|im_end|>" in text and "system" not in text.split("TEMPLATE")[1].split("{{- range")[0]

    # SmolLM2's template adds a default system prompt when the conversation has none
    tok.chat_template = (
        "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
        "{{ '<|im_start|>system\nYou are SmolLM.<|im_end|>\n' }}{% endif %}"
        "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>\n' }}"
        "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    go = ollama_template(tok)
    assert '(ne (index .Messages 0).Role "system") }}<|im_start|>system\nYou are SmolLM.<|im_end|>\n' in go

    tok.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    assert ollama_template(tok) is None


# -- the stage ---------------------------------------------------------------------------------


def test_export_gguf_stage_writes_checked_files_and_modelfile(tiny_run):
    out = export(tiny_run, formats=["gguf"])
    assert out["formats"] == ["gguf"]
    assert out["checks"]["gguf-f16"]["result"] == "identical"
    assert out["checks"]["gguf-q8_0"]["result"] in ("identical", "within tolerance")
    gdir = tiny_run.export_dir / "gguf"
    assert {p.name for p in gdir.iterdir()} == {
        "model-f16.gguf",
        "model-q8_0.gguf",
        "Modelfile",
        "Modelfile.f16",
        "Modelfile.q8_0",
    }
    assert "FROM ./model-f16.gguf" in (gdir / "Modelfile").read_text()
    assert not (tiny_run.export_dir / "merged").exists()  # only what was asked for
    assert tiny_run.manifest()["stages"]["export"]["status"] == "done"
    assert not [p for p in tiny_run.export_dir.iterdir() if p.name.startswith(".")]  # no staging left


def test_rejected_run_is_refused_unless_forced(tiny_run):
    tiny_run.update_manifest(status="rejected")
    try:
        with pytest.raises(ExportError, match="rejected.*--force"):
            export(tiny_run, formats=["adapter"])
        out = export(tiny_run, formats=["adapter"], force=True)
        assert out["checks"]["adapter"]["result"] == "identical"
    finally:
        tiny_run.update_manifest(status="trained")


def test_cli_export_format_option(tiny_run):
    from typer.testing import CliRunner

    from tuneforge.cli import app

    res = CliRunner().invoke(app, ["export", str(tiny_run.path), "--format", "merged", "--format", "adapter"])
    assert res.exit_code == 0, res.output
    assert set(json.loads((tiny_run.export_dir / "export.json").read_text())["artefacts"]) == {"adapter", "merged"}
    res = CliRunner().invoke(app, ["export", str(tiny_run.path), "--format", "onnx"])
    assert res.exit_code == 2 and "unknown export format" in res.output


# -- quantised Hugging Face export ---------------------------------------------------------------


def test_quantized_export_missing_backend_is_a_clear_error(tiny_run, monkeypatch):
    from tuneforge.deploy import quantize

    real = quantize.util.find_spec
    monkeypatch.setattr(quantize.util, "find_spec", lambda name: None if name == "bitsandbytes" else real(name))
    with pytest.raises(quantize.QuantizationUnsupported, match="needs bitsandbytes, which is not installed"):
        export(tiny_run, formats=["quantized"])
    assert tiny_run.manifest()["stages"]["export"]["status"] == "failed"


def test_quantized_int8_export_reloads_and_passes_its_tolerance(tiny_run):
    pytest.importorskip("bitsandbytes")
    out = export(tiny_run, formats=["quantized"])  # the recipe default: int8
    assert out["checks"]["quantized-int8"]["result"] in ("identical", "within tolerance")
    config = json.loads((tiny_run.export_dir / "quantized" / "config.json").read_text())
    assert config["quantization_config"]["quant_method"] == "bitsandbytes"


def test_a_quantised_export_with_pickle_weights_is_refused(tmp_path):
    """Whatever the backend wrote, a .bin/.pt in the export fails it (every loader here refuses pickle)."""
    from tuneforge.deploy.quantize import QuantizationUnsupported, refuse_pickle

    (tmp_path / "model.safetensors").write_bytes(b"x")
    refuse_pickle(tmp_path, "torchao-int8")  # safetensors only: fine
    (tmp_path / "pytorch_model.bin").write_bytes(b"x")
    with pytest.raises(QuantizationUnsupported, match=r"wrote pickle weights \(pytorch_model.bin\)"):
        refuse_pickle(tmp_path, "torchao-int8")


def test_nf4_round_trip_and_tolerance_enforced(tmp_path):
    """NF4 saves and reloads as 4-bit; on a random model (no logit margins) the check rejects it.

    64 wide: bitsandbytes' CPU 4-bit kernel rejects the 16-row k_proj of the 32-wide tiny Llama.
    """
    pytest.importorskip("bitsandbytes")
    import torch
    from conftest import ASSETS
    from transformers import AutoConfig, AutoModelForCausalLM

    from tuneforge.deploy.export import TOLERANCES
    from tuneforge.deploy.quantize import load_quantized, quantize_folder
    from tuneforge.lm.load import load_tokenizer

    cfg = json.loads((ASSETS / "tiny-llama" / "config.json").read_text())
    cfg.update(hidden_size=64, head_dim=16, num_key_value_heads=4, intermediate_size=128)
    src = tmp_path / "wide"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(cfg))
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(src))
    model.save_pretrained(src)
    for f in (ASSETS / "tiny-tokenizer").iterdir():
        shutil.copy(f, src / f.name)
    tok = load_tokenizer(str(src))
    info = quantize_folder(src, tmp_path / "nf4", "nf4", tok)
    assert info["method"] == "nf4"
    assert {f.suffix for f in (tmp_path / "nf4").iterdir() if f.name.startswith("model")} == {".safetensors"}
    qcfg = json.loads((tmp_path / "nf4" / "config.json").read_text())["quantization_config"]
    assert qcfg["load_in_4bit"] and qcfg["bnb_4bit_quant_type"] == "nf4"
    loaded = load_quantized(tmp_path / "nf4")
    assert type(loaded.model.layers[0].mlp.up_proj).__name__ == "Linear4bit"
    with pytest.raises(
        ExportMismatch, match=r"quantized nf4: greedy output differs .*first tokens agree; required 25%"
    ):
        _reference(model, tok).verify(loaded, load_tokenizer(str(tmp_path / "nf4")), "quantized nf4", TOLERANCES["nf4"])


def test_convert_gguf_parses_once_and_matches_a_plain_load(tiny, tmp_path, monkeypatch):
    """`convert_gguf` hands transformers one parsed reader and one tensor-name map per conversion
    (model/sources.py): the folder it writes holds exactly the weights a plain GGUF load gives,
    the file is parsed once, and gguf-py's own functions are back in place afterwards."""
    import gguf
    import torch
    from transformers import AutoModelForCausalLM

    from tuneforge.model.sources import convert_gguf

    model, tok = tiny
    write_gguf(model, tok, tmp_path / "m.gguf", "f16")
    plain, _ = _load_gguf(tmp_path, "m.gguf")
    reader, name_map = gguf.GGUFReader, gguf.get_tensor_name_map
    opened = []

    def counting_reader(path, mode="r"):
        opened.append(str(path))
        return reader(path, mode)

    monkeypatch.setattr(gguf, "GGUFReader", counting_reader)
    folder, digest = convert_gguf(tmp_path / "m.gguf", tmp_path / "cache", "tiny")
    assert opened == [str(tmp_path / "m.gguf")]  # transformers asks for it twice or more
    assert gguf.GGUFReader is counting_reader and gguf.get_tensor_name_map is name_map
    converted = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32)
    want, got = plain.state_dict(), converted.state_dict()
    assert set(got) == set(want)
    assert all(got[k].equal(want[k]) for k in want)
    assert len(digest) == 64
