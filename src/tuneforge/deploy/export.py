"""Export the adapter and a merged full model; prove they behave identically.

Success is declared only after the merged model, loaded back from disk the way a
downstream runtime would, gives the same greedy tokens as base + adapter on golden
prompts. A mismatch fails the export and names the prompt and the first differing token.
"""

from __future__ import annotations

import shutil
from typing import Any

from ..evaluate.generate import greedy_token_ids
from ..io import atomic_write_json, read_jsonl, replace_dir, staging_dir
from ..model.load import load_model, load_trained
from ..recipe import ExportConfig
from ..run import RunDir


class ExportMismatch(RuntimeError):
    pass


def golden_prompts(run: RunDir, cfg: ExportConfig) -> list[str]:
    if cfg.golden_prompts:
        return list(cfg.golden_prompts)
    test = read_jsonl(run.split_file("test")) if run.split_file("test").is_file() else []
    users = [next((m["content"] for m in r["messages"] if m["role"] == "user"), None) for r in test]
    prompts = [u for u in users if u][: cfg.golden_count]
    return prompts or ["Hello! Who are you?"]


def compare_greedy(ref: list[list[int]], got: list[list[int]], prompts: list[str], tokenizer: Any, what: str) -> None:
    for p, a, b in zip(prompts, ref, got):
        if a != b:
            i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
            raise ExportMismatch(
                f"{what}: greedy output differs on golden prompt {p!r} at new token {i}: "
                f"expected {tokenizer.decode(a[i:i + 8])!r}, got {tokenizer.decode(b[i:i + 8])!r} — "
                f"the artefact does not behave like the trained model; do not ship it"
            )


def export(run: RunDir, cfg: ExportConfig | None = None) -> dict:
    run.require()
    cfg = cfg or run.recipe().export
    run.stage_started("export")
    model, tok, source = load_trained(run)
    prompts = golden_prompts(run, cfg)
    ref = greedy_token_ids(model, tok, prompts, cfg.golden_max_new_tokens)
    out: dict[str, Any] = {"golden_prompts": prompts, "artefacts": {}}
    export_dir = run.export_dir
    export_dir.mkdir(parents=True, exist_ok=True)
    is_adapter = hasattr(model, "merge_and_unload")
    if is_adapter:
        # the PEFT adapter as trained (loadable by PEFT, vLLM --lora-modules, LoRAX)
        tmp = staging_dir(export_dir / "adapter")
        model.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        replace_dir(tmp, export_dir / "adapter")
        out["artefacts"]["adapter"] = "export/adapter"
    if cfg.merged or not is_adapter:
        tmp = staging_dir(export_dir / "merged")
        try:
            merged = model.merge_and_unload() if is_adapter else model
            merged.save_pretrained(tmp, safe_serialization=True)
            tok.save_pretrained(tmp)
            del merged
            reloaded = load_model(str(tmp))
            got = greedy_token_ids(reloaded, tok, prompts, cfg.golden_max_new_tokens)
            compare_greedy(ref, got, prompts, tok, "merged model")
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            run.stage_finished("export", "failed")
            raise
        replace_dir(tmp, export_dir / "merged")
        out["artefacts"]["merged"] = "export/merged"
    out["golden_check"] = {"prompts": len(prompts), "tokens_compared": sum(len(r) for r in ref), "result": "identical"}
    out["base_model"] = source.to_dict()
    atomic_write_json(export_dir / "export.json", out)
    run.stage_finished("export", artefacts=out["artefacts"], golden_check=out["golden_check"])
    return out
