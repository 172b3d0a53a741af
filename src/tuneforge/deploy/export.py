"""Export a trained run (adapter, merged, GGUF, quantised) and prove each artefact behaves.

Success is declared for an artefact only after it has been loaded back from disk the
way a downstream runtime would (PEFT on the base, transformers from the folder,
transformers' GGUF loader for .gguf, config-driven quantised loading) and
  * its tokenizer carries the training chat template, BOS/EOS and stop tokens, and
    tokenises every golden prompt to the same ids, and
  * its greedy tokens on the golden prompts match the training-time model: exactly for
    lossless formats, within TOLERANCES for quantised ones.
A mismatch fails the export and names the prompt, the token and what differed.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError
from ..io import atomic_write_json, atomic_write_text, maybe_disk_full, read_jsonl, replace_dir, staging_dir
from ..lm.generate import greedy_token_ids, stop_token_ids
from ..lm.load import load_adapter, load_model, load_tokenizer, offline, remote_code_opt_in
from ..model.load import load_trained
from ..recipe import ExportConfig
from ..run import RunDir

FORMATS = ("adapter", "merged", "gguf", "quantized")


class ExportError(TuneforgeError, RuntimeError):
    """The export cannot be done as asked (refused run, unknown format, unsupported model)."""


class ExportMismatch(ExportError):
    """An artefact does not behave like the trained model."""


@dataclass(frozen=True)
class Tolerance:
    """How far a lossy artefact's greedy output may drift from the trained model's.

    min_identical: share of golden prompts whose new tokens must be identical throughout;
    min_first_token: share whose first new token (how the answer starts) must agree.
    """

    min_identical: float = 1.0
    min_first_token: float = 1.0

    @property
    def exact(self) -> bool:
        return self.min_identical >= 1.0


EXACT = Tolerance()
# Quantisation moves logits by ~1e-2 (q8_0/int8) to ~1e-1 (nf4); a near-tie later in a
# reply can then flip and the rest diverges, so exactness is only asked of lossless formats.
# Every answer must still start the same way (first token), and most replies be identical.
TOLERANCES = {
    "q8_0": Tolerance(min_identical=0.5, min_first_token=1.0),
    "int8": Tolerance(min_identical=0.5, min_first_token=1.0),
    "torchao-int8": Tolerance(min_identical=0.5, min_first_token=1.0),
    "nf4": Tolerance(min_identical=0.25, min_first_token=0.75),
}


# -- inputs ------------------------------------------------------------------------------------


def golden_prompts(run: RunDir, cfg: ExportConfig) -> list[str]:
    if cfg.golden_prompts:
        return list(cfg.golden_prompts)
    test = read_jsonl(run.split_file("test")) if run.split_file("test").is_file() else []
    users = [next((m["content"] for m in r["messages"] if m["role"] == "user"), None) for r in test]
    prompts = [u for u in users if u][: cfg.golden_count]
    return prompts or ["Hello! Who are you?"]


def resolve_formats(formats: Iterable[str] | None, cfg: ExportConfig) -> list[str]:
    """Requested formats in canonical order; accepts repeats and comma lists ("gguf,merged")."""
    if not formats:
        chosen = [f for f in cfg.formats if f != "merged" or cfg.merged]
    else:
        chosen = [p.strip() for f in formats for p in str(f).split(",") if p.strip()]
    unknown = sorted(set(chosen) - set(FORMATS))
    if unknown:
        raise ExportError(f"unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}")
    if not chosen:
        raise ExportError(f"nothing to export: export.formats is empty; choose from {', '.join(FORMATS)}")
    return [f for f in FORMATS if f in chosen]


def refuse_rejected(run: RunDir, force: bool) -> None:
    """A run whose evaluation gates failed is not shipped unless the user insists."""
    if run.manifest().get("status") == "rejected" and not force:
        raise ExportError(
            f"{run.path} is marked 'rejected' (evaluation gates failed, see "
            f"{run.eval_dir / 'report.md'}) — fix the run, or pass --force to export it anyway"
        )


# -- checks ------------------------------------------------------------------------------------


def _first_difference(a: str, b: str) -> str:
    i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
    return f"at character {i}: expected {a[max(0, i - 20) : i + 30]!r}, got {b[max(0, i - 20) : i + 30]!r}"


def check_tokenizer(ref_tok: Any, tok: Any, prompts: list[str], what: str) -> None:
    """Chat template, BOS/EOS and golden-prompt token ids of an artefact equal training's."""
    from ..lm.template import render

    if (tok.chat_template or "") != (ref_tok.chat_template or ""):
        raise ExportMismatch(
            f"{what}: chat template differs from the training template "
            f"{_first_difference(ref_tok.chat_template or '', tok.chat_template or '')} — "
            f"prompts would be formatted differently from training; do not ship it"
        )
    for name in ("eos", "bos"):
        want = (getattr(ref_tok, f"{name}_token"), getattr(ref_tok, f"{name}_token_id"))
        got = (getattr(tok, f"{name}_token"), getattr(tok, f"{name}_token_id"))
        if want != got and not (name == "bos" and want[1] is None):
            raise ExportMismatch(
                f"{what}: {name.upper()} token is {got[0]!r} (id {got[1]}), training used "
                f"{want[0]!r} (id {want[1]}) — generation would not stop where it was trained to"
            )
    for p in prompts:
        msgs = [{"role": "user", "content": p}]
        a = ref_tok(render(ref_tok, msgs, True), add_special_tokens=False)["input_ids"]
        b = tok(render(tok, msgs, True), add_special_tokens=False)["input_ids"]
        if list(a) != list(b):
            i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise ExportMismatch(
                f"{what}: golden prompt {p!r} tokenises differently at token {i}: expected "
                f"{ref_tok.convert_ids_to_tokens(list(a[i : i + 4]))}, got "
                f"{tok.convert_ids_to_tokens(list(b[i : i + 4]))}"
            )


def check_stops(ref_stops: list[int], tok: Any, model: Any, ref_tok: Any, what: str) -> None:
    missing = sorted(set(ref_stops) - set(stop_token_ids(tok, model)))
    if missing:
        raise ExportMismatch(
            f"{what}: does not stop on {ref_tok.convert_ids_to_tokens(missing)} "
            f"(ids {missing}) as the trained model does — replies would run on"
        )


def compare_greedy(
    ref: list[list[int]],
    got: list[list[int]],
    prompts: list[str],
    tokenizer: Any,
    what: str,
    tolerance: Tolerance = EXACT,
) -> dict:
    """Compare greedy new tokens per golden prompt; raise ExportMismatch outside `tolerance`."""
    diffs = []
    for p, a, b in zip(prompts, ref, got):
        if a != b:
            i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            diffs.append((p, i, f"expected {tokenizer.decode(a[i : i + 8])!r}, got {tokenizer.decode(b[i : i + 8])!r}"))
    n = max(len(prompts), 1)
    stats = {
        "prompts": len(prompts),
        "identical": len(prompts) - len(diffs),
        "first_token_agree": len(prompts) - sum(1 for _, i, _ in diffs if i == 0),
        "tokens_compared": sum(len(r) for r in ref),
        "tolerance": asdict(tolerance),
    }
    ok = (
        stats["identical"] / n >= tolerance.min_identical
        and stats["first_token_agree"] / n >= tolerance.min_first_token
    )
    stats["result"] = "identical" if not diffs else "within tolerance" if ok else "mismatch"
    if not ok:
        p, i, detail = diffs[0]
        raise ExportMismatch(
            f"{what}: greedy output differs on golden prompt {p!r} at new token {i}: {detail} "
            f"({stats['identical']}/{len(prompts)} prompts identical, {stats['first_token_agree']}/{len(prompts)} "
            f"first tokens agree; required {tolerance.min_identical:.0%} and {tolerance.min_first_token:.0%}) — "
            f"the artefact does not behave like the trained model; do not ship it"
        )
    return stats


@dataclass
class Reference:
    """The training-time model's behaviour that every artefact is held to."""

    tokenizer: Any
    prompts: list[str]
    tokens: list[list[int]]
    stops: list[int]
    max_new_tokens: int

    def verify(self, model: Any, tok: Any, what: str, tolerance: Tolerance = EXACT) -> dict:
        check_tokenizer(self.tokenizer, tok, self.prompts, what)
        check_stops(self.stops, tok, model, self.tokenizer, what)
        got = greedy_token_ids(model, tok, self.prompts, self.max_new_tokens)
        return compare_greedy(self.tokens, got, self.prompts, self.tokenizer, what, tolerance)


# -- artefacts ---------------------------------------------------------------------------------


def export_adapter(
    model: Any, tok: Any, ref: Reference, base_path: str, dtype: str, final: Path, opt_in: bool | None = None
) -> dict:
    """The PEFT adapter as trained (PEFT, vLLM --lora-modules, LoRAX), checked on a fresh base.
    `opt_in`: the operator's opt-in to the base's custom code (`lm.load.decide_remote_code`)."""
    tmp = staging_dir(final)
    try:
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        loaded = load_adapter(load_model(base_path, dtype, opt_in=opt_in), str(tmp))
        check = ref.verify(loaded, load_tokenizer(str(tmp), opt_in=opt_in), "adapter")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)
    return check


def save_merged(merged: Any, tok: Any, final: Path) -> Path:
    tmp = staging_dir(final)
    merged.save_pretrained(tmp, safe_serialization=True)
    tok.save_pretrained(tmp)
    return tmp


def export_gguf(
    merged: Any, tok: Any, ref: Reference, types: list[str], dtype: str, stops: list[int], final: Path, name: str
) -> dict:
    """One .gguf per type plus Ollama Modelfiles; each file is loaded back by transformers."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from .gguf_export import modelfile_text, write_gguf

    tmp = staging_dir(final)
    out: dict[str, Any] = {"files": {}, "checks": {}}
    try:
        for i, gtype in enumerate(types):
            fname = f"model-{gtype}.gguf"
            t0 = time.perf_counter()
            out["files"][gtype] = write_gguf(merged, tok, tmp / fname, gtype, name)
            # transformers dequantises GGUF into this dtype (gguf_file=...): the downstream view
            loaded = AutoModelForCausalLM.from_pretrained(str(tmp), gguf_file=fname, dtype=getattr(torch, dtype))
            gtok = AutoTokenizer.from_pretrained(str(tmp), gguf_file=fname)
            out["checks"][gtype] = ref.verify(loaded, gtok, f"GGUF {gtype}", TOLERANCES.get(gtype, EXACT))
            out["files"][gtype]["seconds"] = round(time.perf_counter() - t0, 2)
            for mf in (["Modelfile"] if i == 0 else []) + [f"Modelfile.{gtype}"]:
                text = modelfile_text(fname, tok, stops, mf)
                if text is None:
                    out["modelfile"] = (
                        "not written: the chat template is not ChatML, so no Go template is derived "
                        "(the .gguf carries the exact Jinja template in tokenizer.chat_template)"
                    )
                    break
                atomic_write_text(tmp / mf, text)
                out["modelfile"] = "export/gguf/Modelfile"
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)
    return out


def export_quantized(merged_dir: Path, tok: Any, ref: Reference, method: str, final: Path) -> dict:
    from .quantize import QuantizationUnsupported, load_quantized, quantize_folder

    tmp = staging_dir(final)
    try:
        info = quantize_folder(merged_dir, tmp, method, tok)
        try:
            check = ref.verify(
                load_quantized(tmp), load_tokenizer(str(tmp)), f"quantized {method}", TOLERANCES.get(method, EXACT)
            )
        except ExportError:
            raise
        except RuntimeError as exc:
            # e.g. bitsandbytes' CPU 4-bit kernel rejects very narrow layers (16 output rows)
            raise QuantizationUnsupported(
                f"quantized {method}: the saved model does not run on this machine ({type(exc).__name__}: {exc})"
            ) from exc
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    replace_dir(tmp, final)
    return {**info, "check": check}


# -- stage -------------------------------------------------------------------------------------


def export(
    run: RunDir,
    cfg: ExportConfig | None = None,
    formats: Iterable[str] | None = None,
    force: bool = False,
    trust_remote_code: bool | None = None,
) -> dict:
    """Write the requested artefacts under run/export and check each; see the module docstring.

    `trust_remote_code`: the operator's opt-in to the base model's custom code (the CLI's
    --trust-remote-code; None: TUNEFORGE_TRUST_REMOTE_CODE); the run's recipe.yaml grants none."""
    run.require()
    cfg = cfg or run.recipe().export
    chosen = resolve_formats(formats, cfg)
    refuse_rejected(run, force)
    run.stage_started("export")
    try:
        out = _export(run, cfg, chosen, remote_code_opt_in(trust_remote_code))
    except BaseException as exc:
        run.stage_finished("export", "failed", error=f"{type(exc).__name__}: {exc}")
        # every artefact is written into a staging folder and swapped in: the previous ones are whole
        maybe_disk_full(
            run.export_dir,
            exc,
            f"the export under {run.export_dir}",
            "export again (the earlier artefacts are untouched)",
        )
        raise
    run.stage_finished("export", artefacts=out["artefacts"], golden_check=out["golden_check"])
    return out


def _timed(out: dict, key: str, fn, *args) -> Any:
    t0 = time.perf_counter()
    res = fn(*args)
    out["seconds"][key] = round(time.perf_counter() - t0, 2)
    return res


def _export(run: RunDir, cfg: ExportConfig, formats: list[str], opt_in: bool) -> dict:
    offline()
    recipe = run.recipe()
    model, tok, source = load_trained(run, trust_remote_code=opt_in)
    prompts = golden_prompts(run, cfg)
    ref = Reference(
        tok,
        prompts,
        greedy_token_ids(model, tok, prompts, cfg.golden_max_new_tokens),
        stop_token_ids(tok, model),
        cfg.golden_max_new_tokens,
    )
    out: dict[str, Any] = {
        "golden_prompts": prompts,
        "formats": formats,
        "artefacts": {},
        "checks": {},
        "seconds": {},
        "notes": [],
    }
    export_dir = run.export_dir
    export_dir.mkdir(parents=True, exist_ok=True)
    is_adapter = hasattr(model, "peft_config") and hasattr(model, "disable_adapter")  # a PeftModel
    if is_adapter and not hasattr(model, "merge_and_unload"):
        # prefix/prompt tuning learns virtual tokens, not weight deltas: nothing can be merged
        folded = [f for f in formats if f != "adapter"]
        if folded and "adapter" not in formats:
            raise ExportError(
                f"{', '.join(folded)}: a {recipe.strategy.kind}-tuning adapter cannot be merged into "
                f"the weights — export the adapter (`tuneforge export {run.path} --format adapter`) "
                f"and serve it with PEFT on the base model"
            )
        for f in folded:
            out["notes"].append(
                f"{f}: skipped, a {recipe.strategy.kind}-tuning adapter (virtual tokens) cannot be "
                f"merged into the weights; the adapter is the artefact"
            )
        formats = [f for f in formats if f == "adapter"]
    if "adapter" in formats and not is_adapter:
        out["notes"].append("adapter: skipped, the run trained the full model (export 'merged' instead)")
    if "adapter" in formats and is_adapter:
        out["checks"]["adapter"] = _timed(
            out,
            "adapter",
            export_adapter,
            model,
            tok,
            ref,
            source.path,
            recipe.model.dtype,
            export_dir / "adapter",
            opt_in,
        )
        out["artefacts"]["adapter"] = "export/adapter"
    if not {"merged", "gguf", "quantized"} & set(formats):
        return _finish(run, out, source)
    merged = model.merge_and_unload() if is_adapter else model
    merged_tmp = save_merged(merged, tok, export_dir / "merged")
    try:
        if "merged" in formats:
            out["checks"]["merged"] = _timed(
                out,
                "merged",
                lambda: ref.verify(
                    load_model(str(merged_tmp), recipe.model.dtype, opt_in=opt_in),
                    load_tokenizer(str(merged_tmp), opt_in=opt_in),
                    "merged model",
                ),
            )
        if "gguf" in formats:
            res = _timed(
                out,
                "gguf",
                export_gguf,
                merged,
                tok,
                ref,
                list(cfg.gguf_types),
                recipe.model.dtype,
                ref.stops,
                export_dir / "gguf",
                recipe.name,
            )
            out["checks"].update({f"gguf-{t}": c for t, c in res.pop("checks").items()})
            out["gguf"] = res
            out["artefacts"].update({f"gguf-{t}": f"export/gguf/model-{t}.gguf" for t in res["files"]})
        if "quantized" in formats:
            res = _timed(
                out, "quantized", export_quantized, merged_tmp, tok, ref, cfg.quantization, export_dir / "quantized"
            )
            out["checks"][f"quantized-{cfg.quantization}"] = res.pop("check")
            out["quantized"] = res
            out["artefacts"]["quantized"] = "export/quantized"
    except BaseException:
        shutil.rmtree(merged_tmp, ignore_errors=True)
        raise
    if "merged" in formats:
        replace_dir(merged_tmp, export_dir / "merged")
        out["artefacts"]["merged"] = "export/merged"
    else:
        shutil.rmtree(merged_tmp, ignore_errors=True)
    return _finish(run, out, source)


def _finish(run: RunDir, out: dict, source: Any) -> dict:
    checks = out["checks"].values()
    out["golden_check"] = {
        "prompts": len(out["golden_prompts"]),
        "tokens_compared": max((c["tokens_compared"] for c in checks), default=0),
        "result": "identical" if all(c["result"] == "identical" for c in checks) else "within tolerance",
        "per_artefact": {k: c["result"] for k, c in out["checks"].items()},
    }
    out["base_model"] = source.to_dict()
    atomic_write_json(run.export_dir / "export.json", out)
    return out
