"""Stage 1 entry point: validated, cleaned, PII-screened, deduplicated, split, leak- and
length-checked data written into the run directory with its data card."""

from __future__ import annotations

import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..io import atomic_write_json, atomic_write_jsonl, atomic_write_text, sha256_file
from ..lm.template import tokenize_messages
from ..recipe import DataConfig
from ..run import RunDir
from . import enrich
from .balance import balance_train, check_balance_config, distribution, maybe_warn_missing, upsample_rows
from .card import category_counts, render_card, suggested_epochs, write_plots
from .clean import CleanConfig, clean_rows
from .dedup import dedup_rows, remove_leaks
from .formats import to_preference
from .mix import SOURCE_KEY, mix, strip_source
from .pii import apply_pii_policy
from .problems import Problem, summarise
from .split import paraphrase_eligible, paraphrase_split, split_rows
from .validate import LoadedData, enforce_policy, load_validated

SPLITS = ("train", "validation", "test")


def maybe_add_system(row: dict, system_prompt: str | None) -> dict:
    """Prepend `system_prompt` unless the row already has a system message."""
    if not system_prompt or any(m["role"] == "system" for m in row["messages"]):
        return row
    return {**row, "messages": [{"role": "system", "content": system_prompt}] + row["messages"]}


def token_stats(lengths: list[int]) -> dict[str, Any]:
    if not lengths:
        return {"count": 0}
    s = sorted(lengths)
    return {
        "count": len(s),
        "total": sum(s),
        "mean": round(statistics.fmean(s), 1),
        "min": s[0],
        "median": s[len(s) // 2],
        "p95": s[min(len(s) - 1, int(0.95 * len(s)))],
        "max": s[-1],
    }


def rejected_length(tokenizer: Any, row: dict, train_on: str = "assistant") -> int:
    """Tokens of prompt + rejected answer after the chat template (0 for a row without one).

    A preference trainer sees both sides of a pair, so both must fit `data.max_length`.

    >>> rejected_length(None, {"messages": [{"role": "user", "content": "q"}]})
    0
    """
    if "rejected" not in row:  # a prepared pair carries its rejected answer (formats._from_preference)
        return 0
    pair = to_preference(row)
    return len(tokenize_messages(tokenizer, pair["prompt"] + pair["rejected"], train_on)["input_ids"])


def length_check(
    rows: list[dict],
    tokenizer: Any,
    cfg: DataConfig,
    split: str,
    keep_long: bool = False,
    keep_undesirable: bool = False,
) -> tuple[list[dict], dict]:
    """Drop (and count) rows over max_length or under min_tokens; never truncate. Also token statistics.

    A preference pair is over-long when either side is: prompt + chosen or prompt + rejected.

    `keep_long`: raw text for continued pretraining is cut into blocks at training time, so a
    long document is kept whole instead of dropped. `keep_undesirable`: a KTO row labelled false
    carries no SFT loss, but it is half of what KTO learns from: keep it for objective.kind=kto.
    """
    kept, dropped, lengths, trained = [], [], [], []
    min_tokens = getattr(cfg, "min_tokens", 0)
    for r in rows:
        if split == "test" and not any(m["role"] == "assistant" for m in r["messages"]):
            kept.append(r)  # questions only: nothing to train or measure loss on
            continue
        enc = tokenize_messages(tokenizer, r["messages"], cfg.train_on)
        n = len(enc["input_ids"])
        if n > cfg.max_length and not keep_long:
            dropped.append(Problem(r.get("_line", 0), "too_long", "", f"{n} tokens > data.max_length={cfg.max_length}"))
            continue
        n_rejected = rejected_length(tokenizer, r, cfg.train_on)
        if n_rejected > cfg.max_length and not keep_long:
            # DPO/ORPO/KTO trainers cut prompt+rejected to max_length without a word: drop the pair instead
            why = f"prompt + rejected answer: {n_rejected} tokens > data.max_length={cfg.max_length}"
            dropped.append(Problem(r.get("_line", 0), "too_long", "rejected", why))
            continue
        if n < min_tokens:
            dropped.append(
                Problem(r.get("_line", 0), "too_few_tokens", "", f"{n} tokens < data.min_tokens={min_tokens}")
            )
            continue
        n_trained = sum(1 for x in enc["labels"] if x != -100)
        if split != "test" and n_trained == 0 and not (keep_undesirable and r.get("label") is False):
            why = (
                "an undesirable (label false) KTO completion: SFT does not learn it"
                if r.get("label") is False
                else "no token carries loss"
            )
            dropped.append(Problem(r.get("_line", 0), "no_assistant_message", "", why))
            continue
        lengths.append(n)
        trained.append(n_trained)
        kept.append(r)
    stats = {
        "tokens": token_stats(lengths),
        "trained_tokens": sum(trained),
        "dropped_too_long": sum(p.code == "too_long" for p in dropped),
        "dropped_too_long_rejected": sum(p.code == "too_long" and p.field == "rejected" for p in dropped),
        "dropped_too_short": sum(p.code == "too_few_tokens" for p in dropped),
        "problems": dropped,
        "lengths": lengths,
    }
    return kept, stats


def _load(
    path: str, cfg: DataConfig, require_assistant: bool, fmt: str | None = None, fields: dict | None = None
) -> LoadedData:
    fmt, fields = fmt or cfg.format, cfg.fields if fields is None else fields
    data = load_validated(path, fmt, require_assistant=require_assistant, fields=fields)
    enforce_policy(data, cfg.on_error, cfg.max_drop_fraction)
    data.rows = [maybe_add_system(r, cfg.system_prompt) for r in data.rows]
    return data


def _source_names(paths: list[str]) -> list[str]:
    """Card names of the training sources: 'train' alone, else 'train:<file name>' (made unique).

    >>> _source_names(["a/x.jsonl"]), _source_names(["a/x.jsonl", "b/x.jsonl", "y.csv"])
    (['train'], ['train:x.jsonl', 'train:x.jsonl#2', 'train:y.csv'])
    """
    if len(paths) == 1:
        return ["train"]
    out: list[str] = []
    for p in paths:
        name = f"train:{Path(p).name}"
        out.append(name if name not in out else f"{name}#{sum(o.startswith(name) for o in out) + 1}")
    return out


def _split(rows: list[dict], fractions: dict[str, float], cfg: DataConfig) -> tuple[dict, str]:
    """Test first (random, stratified if asked), then validation: paraphrase-aware when the
    data restates facts (`data.validation_split`), so validation loss measures generalisation."""
    mode = cfg.validation_split
    if mode == "auto":
        mode = "paraphrase" if not cfg.stratify_by and paraphrase_eligible(rows) >= len(rows) / 2 else "random"
    if "validation" not in fractions or mode == "random":
        return split_rows(rows, fractions, cfg.seed, cfg.stratify_by), "random"
    rest = {k: v for k, v in fractions.items() if k != "validation"}
    parts = split_rows(rows, rest, cfg.seed, cfg.stratify_by)
    val_frac = fractions["validation"]
    # the validation share is of all rows, as with a random split
    share = val_frac * len(rows) / max(len(parts["train"]), 1)
    parts["train"], parts["validation"] = paraphrase_split(parts["train"], min(share, 0.99), cfg.seed)
    return parts, "paraphrase"


def _enrich(
    parts: dict, cfg: DataConfig, card: dict, tokenizer: Any, objective: str, base: Any, answer: Any, loaded: dict
) -> list[dict]:
    """Training split + paraphrases + 'I don't know' rows + replay rows (see `enrich`)."""
    train = parts["train"]
    held = {s: parts.get(s, []) for s in ("validation", "test")}
    added, card["augment"] = enrich.augment_train(train, held, cfg)
    train = train + added
    abstain, card["abstain"] = enrich.abstain_train(train, cfg)
    train = train + abstain
    if enrich.replay_wanted(cfg, objective, [d.format for d in loaded.values()]):
        if base is None and answer is None:
            if cfg.replay.enabled is True:
                raise ValueError("data.replay needs the base model: run prepare through `tuneforge prepare/run`")
            card["replay_skipped"] = "no base model was given to prepare (a direct call, not `tuneforge prepare`)"
        else:
            replay, card["replay"] = enrich.replay_train(len(train), cfg, base, tokenizer, answer)
            train = train + replay
    return train


def _clean_and_screen(data: LoadedData, cfg: DataConfig) -> dict:
    """Clean text, drop junk rows, apply the PII policy; returns the source's card entries."""
    rows, problems, changed = clean_rows(data.rows, CleanConfig.from_data_config(cfg))
    rows, pii_report = apply_pii_policy(rows, cfg.pii, cfg.pii_types, cfg.pii_allow)
    data.rows = rows
    return {
        "cleaning": {"rows_changed": changed, "rows_dropped": len(problems), "problems": summarise(problems)},
        "pii": pii_report,
    }


def prepare(
    cfg: DataConfig,
    run: RunDir,
    tokenizer: Any,
    log: Callable[[str], Any] | None = None,
    time_estimate: Callable[[list[dict]], dict] | None = None,
    keep_undesirable: bool = False,
    objective: str = "sft",
    base: Any = None,
    replay_answer: Callable | None = None,
) -> dict:
    """Load, validate, clean, screen for PII, deduplicate, split, leak-check and length-check the
    data; write the splits, data_card.{md,json} and plots into `run`.

    `time_estimate(train_rows)`: the training-time estimate for the card (`data.estimate_time`);
    the caller builds it from the training setup (`train.estimate.recipe_time_estimate`), so the
    data stage needs nothing of training. `keep_undesirable`: keep KTO rows labelled false (the
    caller passes `recipe.objective.kind == "kto"`).

    `base` (a `ModelSource`): the base model, whose own answers `data.replay` mixes in
    (`objective` decides whether replay's `auto` is on); `replay_answer` replaces its
    generation (tests)."""
    check_balance_config(cfg.stratify_by, cfg.max_per_label, cfg.balance)
    specs = cfg.sources()
    names = _source_names([s.path for s in specs])
    loaded = {}
    for i, (spec, name) in enumerate(zip(specs, names)):
        loaded[name] = _load(spec.path, cfg, True, spec.format, spec.fields)
        for r in loaded[name].rows:
            r[SOURCE_KEY] = i
    for split in ("validation", "test"):
        path = getattr(cfg, split)
        if path:
            loaded[split] = _load(path, cfg, require_assistant=(split != "test"))
    card: dict[str, Any] = {
        "sources": {},
        "splits": {},
        "seed": cfg.seed,
        "max_length": cfg.max_length,
        "train_on": cfg.train_on,
    }
    for name, data in loaded.items():
        card["sources"][name] = {
            "path": data.path,
            "format": data.format,
            "rows_valid": len(data.rows),
            "rows_invalid": len({p.line for p in data.problems}),
            "problems": summarise(data.problems),
            **_clean_and_screen(data, cfg),
        }
    train_rows, card["dedup"] = dedup_rows([r for n in names for r in loaded[n].rows], cfg.dedup, cfg.dedup_threshold)
    fractions = {s: getattr(cfg, f"{s}_fraction") for s in ("validation", "test") if s not in loaded}
    parts, card["validation_split"] = _split(train_rows, fractions, cfg)
    for s in ("validation", "test"):
        if s in loaded:
            parts[s] = loaded[s].rows
    if cfg.leak_check:
        parts, card["leaks"] = remove_leaks(parts, cfg.leak_threshold)
    if len(specs) > 1:
        parts["train"], card["mixture"] = mix(parts["train"], specs, cfg.seed, names)
    for s in SPLITS:
        parts[s] = strip_source(parts.get(s, []))
    if cfg.stratify_by:
        parts["train"], card["balance"] = balance_train(parts["train"], cfg.stratify_by, cfg.max_per_label, cfg.seed)
        card["balance"]["stratified"] = [s for s in fractions if fractions[s] > 0]  # the parts split off here
    parts["train"] = _enrich(parts, cfg, card, tokenizer, objective, base, replay_answer, loaded)
    hashes, lengths, written = {}, {}, {}
    first = loaded[names[0]]
    raw_text = {s for s in ("train", "validation") if loaded.get(s, first).format == "text"}
    for split in SPLITS:
        opts = {"keep_long": split in raw_text, "keep_undesirable": keep_undesirable}
        rows, stats = length_check(parts.get(split, []), tokenizer, cfg, split, **opts)
        if split == "train" and cfg.balance == "upsample":
            # after the length check, so no over-long row is copied; re-checked for the card's totals
            rows, card["balance"]["upsampled"] = upsample_rows(rows, cfg.stratify_by, cfg.seed)
            rows, stats = length_check(rows, tokenizer, cfg, split, **opts)
        if split == "train" and not rows:
            raise ValueError(
                f"{', '.join(s.path for s in specs)}: no training rows left after cleaning, deduplication and length checks "
                f"(see {run.data_dir / 'data_card.json'}; max_length={cfg.max_length})"
            )
        lengths[split] = stats.pop("lengths")
        stats["problems"] = summarise(stats["problems"])
        card["splits"][split] = {"rows": len(rows), **stats}
        if split == "train":
            card["categories"] = category_counts(rows)
            if cfg.stratify_by:
                card["categories"] = {cfg.stratify_by: distribution(rows, cfg.stratify_by), **card["categories"]}
        written[split] = rows
        path = atomic_write_jsonl(run.split_file(split), rows)
        hashes[split] = sha256_file(path)
    train = card["splits"]["train"]
    card["estimate"] = {
        "train_examples": train["rows"],
        "train_tokens": train["tokens"].get("total", 0),
        "trained_tokens": train["trained_tokens"],
        "suggested_epochs": suggested_epochs(train["rows"]),
    }
    if "balance" in card:
        card["balance"]["by_split"] = {s: distribution(rows, cfg.stratify_by) for s, rows in written.items() if rows}
    if time_estimate is not None:
        card["estimate"]["time"] = time_estimate(written["train"])
    card["sha256"] = hashes
    card["plots"] = (
        write_plots(run.data_dir, lengths, cfg.max_length, card["categories"], cfg.stratify_by) if cfg.plots else []
    )
    atomic_write_json(run.data_dir / "data_card.json", card)
    atomic_write_text(run.data_dir / "data_card.md", render_card(card))
    run.update_manifest(data=hashes)
    for line in warnings(card):
        (log or _warn)(line)
    return card


def _warn(line: str) -> None:
    import sys

    print(f"warning: {line}", file=sys.stderr)


def warnings(card: dict) -> list[str]:
    """What a user should not miss before training (also in the data card)."""
    out = []
    for name, src in card["sources"].items():
        pii = src.get("pii", {})
        if pii.get("policy") == "report" and pii.get("counts"):
            found = ", ".join(f"{t} {n}" for t, n in pii["counts"].items())
            out.append(
                f"{name}: personal data found ({found}) and left in place — set data.pii=redact or drop "
                f"to keep it out of the weights (data.pii_allow lists strings that are fine)"
            )
    out += maybe_warn_missing(card.get("balance", {}))
    lk = card.get("leaks", {})
    if lk.get("removed_from_train"):
        out.append(f"{lk['removed_from_train']} training row(s) copied validation/test rows and were removed")
    return out
