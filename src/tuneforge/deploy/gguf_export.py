"""Write a Llama-architecture model and its tokenizer as GGUF (llama.cpp, Ollama, LM Studio).

Written with the `gguf` package's GGUFWriter, following llama.cpp's convert_hf_to_gguf.py
(LlamaModel): the same tensor names, the same rotary permutation of Q/K rows, the same
metadata keys. transformers' GGUF loader (modeling_gguf_pytorch_utils.LlamaTensorProcessor
and integrations/gguf/gguf_tokenizer_mapping.py) undoes exactly these steps, and the export
check loads every file back through it, so an inconsistency here fails the export.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError

# name -> (tensor type of 2-D weights, llama.cpp file type). 1-D tensors (norms, biases)
# stay F32 whatever the type, as llama.cpp's converter does ("except 1d tensors").
GGUF_TYPES = {
    "f32": ("F32", "ALL_F32"),
    "f16": ("F16", "MOSTLY_F16"),
    "bf16": ("BF16", "MOSTLY_BF16"),
    "q8_0": ("Q8_0", "MOSTLY_Q8_0"),
}

_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)\.(weight|bias)$")
_LAYER_PARTS = {
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
}
_TOP = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}


class GGUFExportError(TuneforgeError, ValueError):
    pass


# -- tensors ------------------------------------------------------------------------------------


def gguf_tensor_name(hf_name: str) -> str | None:
    """The GGUF name llama.cpp gives a Hugging Face Llama tensor, or None if it has none.

    >>> gguf_tensor_name("model.layers.3.self_attn.o_proj.weight")
    'blk.3.attn_output.weight'
    """
    if hf_name in _TOP:
        return _TOP[hf_name]
    m = _LAYER.match(hf_name)
    if m and m.group(2) in _LAYER_PARTS:
        return f"blk.{m.group(1)}.{_LAYER_PARTS[m.group(2)]}.{m.group(3)}"
    return None


def permute_rotary(w: Any, n_head: int, n_head_kv: int | None = None) -> Any:
    """llama.cpp's LlamaModel.permute: HF's rotate-half Q/K rows → interleaved pairs (GGML rope).

    transformers' LlamaTensorProcessor._reverse_permute_weights is the exact inverse:
    it reshapes to (heads, dim, 2) and swaps back. Works on weights and on 1-D biases.
    """
    if n_head_kv is not None and n_head != n_head_kv:
        n_head = n_head_kv
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def check_supported(config: Any) -> None:
    """Refuse what this writer does not describe, rather than write a file that misbehaves."""
    problems = []
    if getattr(config, "model_type", None) != "llama":
        problems.append(
            f"model_type is {getattr(config, 'model_type', None)!r}; GGUF export supports 'llama' "
            f"(export the merged safetensors model and convert it with llama.cpp's convert_hf_to_gguf.py)"
        )
    rope = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    if rope.get("rope_type", "default") != "default":
        problems.append(f"rope scaling {rope.get('rope_type')!r} is not written by this exporter")
    if getattr(config, "mlp_bias", False):
        problems.append("MLP biases are not part of llama.cpp's Llama graph")
    if problems:
        raise GGUFExportError("cannot write GGUF: " + "; ".join(problems))


def gguf_tensors(state_dict: dict, config: Any) -> Iterator[tuple[str, Any]]:
    """(GGUF name, float32 numpy array) for every tensor llama.cpp's Llama graph reads."""
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for hf_name, t in state_dict.items():
        if "rotary_emb" in hf_name:
            continue  # recomputed from rope.freq_base at load time
        if hf_name == "lm_head.weight" and tied:
            continue  # no output.weight tells loaders the embeddings are tied (transformers, llama.cpp)
        name = gguf_tensor_name(hf_name)
        if name is None:
            raise GGUFExportError(f"cannot write GGUF: tensor {hf_name!r} has no llama.cpp Llama name")
        arr = t.detach().to("cpu").float().numpy()
        if ".attn_q." in name:
            arr = permute_rotary(arr, config.num_attention_heads, config.num_attention_heads)
        elif ".attn_k." in name:
            arr = permute_rotary(arr, config.num_attention_heads, config.num_key_value_heads)
        yield name, arr


def encode_tensor(arr: Any, gtype: str) -> tuple[Any, Any]:
    """(data, raw GGML type or None) for GGUFWriter.add_tensor."""
    import numpy as np
    from gguf import GGMLQuantizationType
    from gguf.quants import quantize

    kind = GGUF_TYPES[gtype][0]
    if arr.ndim < 2 or kind == "F32":
        return arr.astype(np.float32), None
    if kind == "F16":
        return arr.astype(np.float16), None
    qtype = GGMLQuantizationType[kind]
    if kind == "Q8_0" and arr.shape[-1] % 32:
        # rows must be whole 32-value blocks; llama.cpp falls back to F16 the same way
        return arr.astype(np.float16), None
    return quantize(arr, qtype), qtype


# -- hyperparameters and tokenizer ---------------------------------------------------------------


def write_hparams(w: Any, config: Any, n_vocab: int) -> None:
    """The llama.* keys transformers' GGUF_CONFIG_MAPPING['llama'] and llama.cpp read."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    rope = getattr(config, "rope_parameters", None) or {}
    w.add_vocab_size(n_vocab)
    w.add_context_length(config.max_position_embeddings)
    w.add_embedding_length(config.hidden_size)
    w.add_block_count(config.num_hidden_layers)
    w.add_feed_forward_length(config.intermediate_size)
    w.add_head_count(config.num_attention_heads)
    w.add_head_count_kv(config.num_key_value_heads)
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_dimension_count(head_dim)
    w.add_rope_freq_base(float(rope.get("rope_theta", getattr(config, "rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(config.rms_norm_eps))


def _pre_steps(spec: dict) -> list[dict]:
    pt = spec.get("pre_tokenizer") or {}
    return list(pt.get("pretokenizers", [])) if pt.get("type") == "Sequence" else [pt]


def pre_tokenizer_name(spec: dict) -> str:
    """llama.cpp's `tokenizer.ggml.pre` for a byte-level BPE tokenizer.json, or raise.

    The pre-tokenizer decides how text is split before merges; llama.cpp picks its regex
    by this name, so a wrong name silently changes tokenisation in every GGUF runtime.
    """
    from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

    steps = _pre_steps(spec)
    kinds = [s.get("type") for s in steps]
    if kinds == ["ByteLevel"] and steps[0].get("use_regex", True):
        return "gpt-2"
    if kinds == ["Digits", "ByteLevel"] and steps[0].get("individual_digits") and steps[1].get("use_regex", True):
        return "smollm"  # llama.cpp: \p{N} split, then the GPT-2 regex (SmolLM's tokenizer.json)
    if kinds == ["Split", "ByteLevel"] and not steps[1].get("use_regex", True):
        pattern = (steps[0].get("pattern") or {}).get("Regex")
        for name, regex in GGUF_PRE_TOKENIZER_SPLITS.items():
            if regex == pattern:
                return name
    raise GGUFExportError(
        f"cannot write GGUF: pre-tokenizer {kinds} has no llama.cpp equivalent known to tuneforge; "
        f"GGUF runtimes would split text differently"
    )


def gguf_vocab(tokenizer: Any, n_vocab: int) -> dict:
    """tokens, token types, merges and pre-tokenizer name, as llama.cpp's _set_vocab_gpt2 writes them."""
    from gguf import TokenType

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    model = spec.get("model", {})
    if model.get("type") != "BPE" or "ByteLevel" not in json.dumps(spec.get("pre_tokenizer")):
        raise GGUFExportError("cannot write GGUF: only byte-level BPE (GPT-2 style) tokenizers are supported")
    by_id = {i: t for t, i in model["vocab"].items()}
    added = {a["id"]: a for a in spec.get("added_tokens", [])}
    by_id.update({i: a["content"] for i, a in added.items()})
    if by_id and max(by_id) >= n_vocab:
        raise GGUFExportError(
            f"cannot write GGUF: the tokenizer has id {max(by_id)} but the model only {n_vocab} embeddings"
        )
    tokens, types = [], []
    for i in range(n_vocab):
        if i not in by_id:
            tokens.append(f"[PAD{i}]")  # embedding rows without a token, named as llama.cpp does
            types.append(TokenType.UNUSED)
            continue
        tokens.append(by_id[i])
        if i in added:
            types.append(TokenType.CONTROL if added[i].get("special") else TokenType.USER_DEFINED)
        else:
            types.append(TokenType.NORMAL)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return {"tokens": tokens, "types": types, "merges": merges, "pre": pre_tokenizer_name(spec)}


def adds_special(tokenizer: Any, token_id: int | None, first: bool) -> bool:
    """Does encoding plain text add this token (BOS at the start / EOS at the end)?"""
    if token_id is None:
        return False
    ids = tokenizer("a", add_special_tokens=True)["input_ids"]
    return bool(ids) and ids[0 if first else -1] == token_id


def write_tokenizer(w: Any, tokenizer: Any, n_vocab: int) -> dict:
    if tokenizer.eos_token_id is None:
        raise GGUFExportError("cannot write GGUF: the tokenizer has no EOS token; runtimes would never stop")
    if not isinstance(getattr(tokenizer, "chat_template", None), str):
        raise GGUFExportError("cannot write GGUF: the tokenizer has no single chat template to embed")
    vocab = gguf_vocab(tokenizer, n_vocab)
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(vocab["pre"])
    w.add_token_list(vocab["tokens"])
    w.add_token_types(vocab["types"])
    w.add_token_merges(vocab["merges"])
    for add, tid in (
        (w.add_bos_token_id, tokenizer.bos_token_id),
        (w.add_eos_token_id, tokenizer.eos_token_id),
        (w.add_pad_token_id, tokenizer.pad_token_id),
        (w.add_unk_token_id, tokenizer.unk_token_id),
    ):
        if tid is not None:
            add(int(tid))
    w.add_add_bos_token(adds_special(tokenizer, tokenizer.bos_token_id, first=True))
    w.add_add_eos_token(adds_special(tokenizer, tokenizer.eos_token_id, first=False))
    w.add_chat_template(tokenizer.chat_template)
    return {"pre": vocab["pre"], "tokens": len(vocab["tokens"]), "merges": len(vocab["merges"])}


# -- file ----------------------------------------------------------------------------------------


def write_gguf(model: Any, tokenizer: Any, path: Path, gtype: str, name: str = "tuneforge") -> dict:
    """Write `model` (a merged, plain transformers Llama) and `tokenizer` to one GGUF file."""
    import gguf

    if gtype not in GGUF_TYPES:
        raise GGUFExportError(f"unknown GGUF type {gtype!r}; choose from {sorted(GGUF_TYPES)}")
    config = model.config
    check_supported(config)
    n_vocab = model.get_input_embeddings().weight.shape[0]
    w = gguf.GGUFWriter(str(path), "llama")
    try:
        # transformers' GGUF loader re-labels a llama file as Mistral when general.name contains
        # "mistral" (modeling_gguf_pytorch_utils.load_gguf_checkpoint), so keep the word out
        w.add_name(re.sub("mistral", "m-istral", name, flags=re.IGNORECASE))
        w.add_file_type(int(gguf.LlamaFileType[GGUF_TYPES[gtype][1]]))
        write_hparams(w, config, n_vocab)
        info = write_tokenizer(w, tokenizer, n_vocab)
        count = 0
        for tname, arr in gguf_tensors(model.state_dict(), config):
            data, raw = encode_tensor(arr, gtype)
            w.add_tensor(tname, data, raw_dtype=raw)
            count += 1
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()
    return {"type": gtype, "tensors": count, "bytes": path.stat().st_size, **info}


# -- Ollama --------------------------------------------------------------------------------------

_IM_START, _IM_END = "<|im_start|>", "<|im_end|>"
_PROBES = [
    [{"role": "user", "content": "Q1"}],
    [{"role": "system", "content": "S1"}, {"role": "user", "content": "Q1"}],
    [{"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}, {"role": "user", "content": "Q2"}],
    [{"role": "system", "content": "S1"}, {"role": "user", "content": "Q1"}, {"role": "assistant", "content": "A1"}],
]


def _chatml(messages: list[dict], default_system: str | None, generation: bool) -> str:
    out = ""
    if default_system is not None and messages[0]["role"] != "system":
        out += f"{_IM_START}system\n{default_system}{_IM_END}\n"
    out += "".join(f"{_IM_START}{m['role']}\n{m['content']}{_IM_END}\n" for m in messages)
    return out + (f"{_IM_START}assistant\n" if generation else "")


def chatml_default_system(tokenizer: Any) -> tuple[bool, str | None]:
    """(is ChatML, default system prompt) — judged by rendering probe conversations with the
    tokenizer's own Jinja template and comparing with ChatML byte for byte."""
    first = tokenizer.apply_chat_template(_PROBES[0], tokenize=False)
    head = f"{_IM_START}system\n"
    end = first.find(_IM_END)
    default = first[len(head) : end] if first.startswith(head) and end > 0 else None
    for msgs in _PROBES:
        for gen in (False, True):
            if msgs[-1]["role"] == "assistant" and gen:
                continue
            if tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=gen) != _chatml(
                msgs, default, gen
            ):
                return False, None
    return True, default


def ollama_template(tokenizer: Any) -> str | None:
    """The training chat template as an Ollama Go template, or None when it is not ChatML.

    Ollama renders `.Messages` and always opens the assistant turn after a non-assistant
    last message, which is `add_generation_prompt=True` in Jinja.
    """
    ok, default = chatml_default_system(tokenizer)
    if not ok or (default and ("{{" in default or '"""' in default)):
        return None
    sys_block = ""
    if default is not None:
        sys_block = (
            '{{- if or (not .Messages) (ne (index .Messages 0).Role "system") }}'
            f"{_IM_START}system\n{default}{_IM_END}\n{{{{ end }}}}\n"
        )
    return (
        sys_block
        + "{{- range $i, $_ := .Messages }}\n"
        + "{{- $last := eq (len (slice $.Messages $i)) 1 -}}\n"
        + f"{_IM_START}{{{{ .Role }}}}\n{{{{ .Content }}}}{_IM_END}\n"
        + f'{{{{ if and $last (ne .Role "assistant") }}}}{_IM_START}assistant\n{{{{ end }}}}\n'
        + "{{- end }}"
    )


def modelfile_text(gguf_name: str, tokenizer: Any, stop_ids: list[int], filename: str = "Modelfile") -> str | None:
    """An Ollama Modelfile with the exact chat template and every stop token, or None."""
    template = ollama_template(tokenizer)
    if template is None:
        return None
    stops = sorted({tokenizer.convert_ids_to_tokens(int(i)) for i in stop_ids})
    lines = [
        f"# written by tuneforge export; `ollama create NAME -f {filename}`",
        f"FROM ./{gguf_name}",
        f'TEMPLATE """{template}"""',
    ]
    lines += [f"PARAMETER stop {json.dumps(s)}" for s in stops]
    return "\n".join(lines) + "\n"
