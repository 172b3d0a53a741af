"""The data card: what went in, what was dropped or changed and why, what it will cost.

`render_card` turns the card dict (data_card.json) into data_card.md; `write_plots` renders
the length histograms and label distribution as PNGs (matplotlib, Agg backend, written
aside then renamed like every other run file).
"""

from __future__ import annotations

import io
import os
import tempfile
from collections import Counter
from pathlib import Path
from typing import Any

# columns whose values describe what a row is about (balance report)
CATEGORY_KEYS = ("label", "intent", "category", "source", "fact_id")

# OpenAI's chat fine-tuning data-prep heuristic (openai-cookbook, "Chat_finetuning_data_prep"):
# aim for 3 epochs, but see at least 100 and at most 25,000 examples in total, 1-25 epochs.
TARGET_EPOCHS, MIN_TARGET_EXAMPLES, MAX_TARGET_EXAMPLES, MIN_EPOCHS, MAX_EPOCHS = 3, 100, 25_000, 1, 25


def suggested_epochs(n_examples: int) -> int:
    """Epochs for `n_examples`, after OpenAI's heuristic.

    >>> suggested_epochs(20), suggested_epochs(300), suggested_epochs(100_000)
    (5, 3, 1)
    """
    if n_examples <= 0:
        return 0
    if n_examples * TARGET_EPOCHS < MIN_TARGET_EXAMPLES:
        return min(MAX_EPOCHS, MIN_TARGET_EXAMPLES // n_examples)
    if n_examples * TARGET_EPOCHS > MAX_TARGET_EXAMPLES:
        return max(MIN_EPOCHS, MAX_TARGET_EXAMPLES // n_examples)
    return TARGET_EPOCHS


def category_counts(rows: list[dict]) -> dict[str, dict[str, int]]:
    """Value counts of the first few category-like columns rows carry (label, intent, …)."""
    out = {}
    for key in CATEGORY_KEYS:
        vals = [r[key] for r in rows if key in r and isinstance(r[key], (str, int, bool))]
        if vals:
            counts = Counter(str(v) for v in vals)
            out[key] = dict(counts.most_common(30))
    return out


def _atomic_write_bytes(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def _save(fig: Any, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    _atomic_write_bytes(path, buf.getvalue())
    return path.name


def write_plots(
    out_dir: Path,
    lengths: dict[str, list[int]],
    max_length: int,
    categories: dict[str, dict[str, int]],
    prefer: str | None = None,
) -> list[str]:
    """lengths.png (token lengths per split, max_length marked) and labels.png when rows carry labels
    (of `prefer`, the data.stratify_by field, when set)."""
    import matplotlib

    matplotlib.use("Agg")  # no display on servers; must precede pyplot
    import matplotlib.pyplot as plt

    written = []
    if any(lengths.values()):
        fig, ax = plt.subplots(figsize=(7, 3.5))
        lo = min(min(ls) for ls in lengths.values() if ls)
        hi = max(max(ls) for ls in lengths.values() if ls)
        bins = [lo + (hi - lo + 1) * i / 30 for i in range(31)]  # shared bins so splits compare
        for split, ls in lengths.items():
            if ls:
                ax.hist(ls, bins=bins, alpha=0.55, label=f"{split} ({len(ls)})")
        title = "Example lengths"
        if max_length <= 1.5 * hi:  # a far-away limit line would squash the histogram
            ax.axvline(max_length, color="red", linestyle="--", label=f"max_length {max_length}")
        else:
            title += f" (all well under max_length {max_length})"
        ax.set_xlabel("tokens per example (chat template applied)")
        ax.set_ylabel("examples")
        ax.set_title(title)
        ax.legend()
        written.append(_save(fig, out_dir / "lengths.png"))
        plt.close(fig)
    key = next((k for k in (prefer, "label", "intent", "category", "source") if k and k in categories), None)
    if key:
        counts = categories[key]
        fig, ax = plt.subplots(figsize=(7, 0.3 * len(counts) + 1.5))
        ax.barh(list(counts)[::-1], list(counts.values())[::-1])
        ax.set_xlabel("training examples")
        ax.set_title(f"Training rows per {key}")
        written.append(_save(fig, out_dir / "labels.png"))
        plt.close(fig)
    return written


def _problem_lines(summary: dict, indent: str = "  ") -> list[str]:
    lines = []
    for code, n in summary.get("counts", {}).items():
        ex = summary["examples"][code][0]
        field = f" {ex['field']}" if ex.get("field") else ""
        lines.append(
            f"{indent}- {code}: {n} (first: line {ex['line']}{field} — {ex['reason']}; "
            f"fix: {summary['fixes'].get(code, '')})"
        )
    return lines


def _added_lines(card: dict) -> list[str]:
    """The mixture, the validation split mode and the rows prepare added to training."""
    lines = []
    mx = card.get("mixture")
    if mx:
        lines += [
            "## Mixture (training split)",
            "",
            "| source | rows available | rows used | share | repeats |",
            "|---|---|---|---|---|",
        ]
        lines += [
            f"| {s['name']} | {s['rows_available']} | {s['rows_used']} | {100 * s['share']:.1f}% | {s['repeats']} |"
            for s in mx["sources"]
        ]
        lines.append("")
    vs = card.get("validation_split")
    if vs:
        why = (
            "validation rows restate facts that stay in training, in other words"
            if vs == "paraphrase"
            else "seeded random"
        )
        lines += [f"Validation split: {vs} ({why}).", ""]
    added = []
    aug = card.get("augment") or {}
    if aug.get("n"):
        added.append(
            f"- paraphrases ({aug['generator']}, {aug['n']} per row): {aug['rows']} rows; dropped {aug['dropped']}"
        )
    ab = card.get("abstain") or {}
    if ab.get("rows"):
        added.append(
            f"- 'I don't know' rows: {ab['rows']} ({ab.get('dropped_close_to_training', 0)} dropped as close to a training question)"
        )
    rp = card.get("replay") or {}
    if rp:
        line = f"- replay of the base model's own answers: {rp['rows']} rows of {rp['wanted']} wanted (ratio {rp['ratio']}, {rp['pool_file']}; {rp['generated_now']} generated now, {rp['left_out_unfinished']} unfinished left out)"
        added.append(line + (f" — {rp['note']}" if rp.get("note") else ""))
    if added:
        lines += ["## Added to training", "", *added, ""]
    return lines


def render_card(card: dict) -> str:
    lines = ["# Data card", ""]
    for name, src in card["sources"].items():
        lines += [
            f"## Source: {name}",
            f"- file: `{src['path']}`",
            f"- format: {src['format']}",
            f"- valid rows: {src['rows_valid']}, invalid rows: {src['rows_invalid']}",
        ]
        lines += _problem_lines(src["problems"])
        cl = src.get("cleaning")
        if cl:
            lines.append(
                f"- cleaning: text changed in {cl['rows_changed']} row(s), {cl['rows_dropped']} row(s) dropped"
            )
            lines += _problem_lines(cl["problems"])
        pii = src.get("pii")
        if pii and pii["policy"] != "off":
            found = ", ".join(f"{t} {n}" for t, n in pii["counts"].items()) or "none"
            what = {
                "redact": "replaced by placeholders",
                "drop": f"{pii['rows_dropped']} row(s) dropped",
                "report": "left in place (data.pii=report)",
            }[pii["policy"]]
            lines.append(f"- personal data: {found} in {pii['rows_with_pii']} row(s) — {what}")
            if pii["lines"]:
                lines.append(
                    "  - first rows: "
                    + ", ".join(f"line {x['line']} ({'/'.join(x['types'])})" for x in pii["lines"][:8])
                )
        lines.append("")
    dd = card.get("dedup")
    if dd:
        lines += [
            "## Duplicates and leaks",
            "",
            f"- training duplicates removed ({dd['mode']}, threshold {dd['threshold']}): "
            f"{dd['exact']} exact, {dd['near']} near",
        ]
        lines += [
            f"  - line {p['dropped_line']} repeats line {p['kept_line']} ({p['kind']}, similarity {p['similarity']})"
            for p in dd["pairs"][:5]
        ]
    lk = card.get("leaks")
    if lk:
        per = ", ".join(f"{s}: {n}" for s, n in lk["by_split"].items())
        lines.append(
            f"- validation/test rows that copy training rows (threshold {lk['threshold']}): {per or 'not checked'}; "
            f"{lk['removed_from_train']} training row(s) removed"
        )
        lines += [
            f"  - {e['split']} line {e['line']} ≈ train line {e['train_line']} (similarity {e['similarity']})"
            for e in lk["examples"][:5]
        ]
    if dd or lk:
        lines.append("")
    lines += _added_lines(card)
    lines += [
        "## Splits",
        "",
        "| split | rows | tokens (mean / p95 / max) | total tokens | trained tokens | dropped (length) |",
        "|---|---|---|---|---|---|",
    ]
    for split, s in card["splits"].items():
        t = s["tokens"]
        lines.append(
            f"| {split} | {s['rows']} | {t.get('mean', '-')} / {t.get('p95', '-')} / {t.get('max', '-')} | "
            f"{t.get('total', 0)} | {s['trained_tokens']} | {s['dropped_too_long'] + s.get('dropped_too_short', 0)} |"
        )
        lines += _problem_lines(s["problems"])
        if s.get("dropped_too_long_rejected"):
            lines.append(
                f"  - of those over max_length, {s['dropped_too_long_rejected']} pair(s) only on the rejected "
                "side (a preference trainer would have cut it silently)"
            )
    est = card.get("estimate")
    if est:
        lines += [
            "",
            "## Estimate",
            "",
            f"- training examples: {est['train_examples']}, tokens per epoch: {est['train_tokens']:,} "
            f"({est['trained_tokens']:,} carry loss)",
            f"- suggested epochs: {est['suggested_epochs']} (OpenAI's heuristic: ~3 epochs, at least "
            f"{MIN_TARGET_EXAMPLES} examples seen in total)",
        ]
        if est.get("time"):
            lines.append(f"- training time: {describe(est['time'])}")
    bal = card.get("balance")
    if bal:
        from .balance import render_balance

        lines += render_balance(bal)
    cats = {k: v for k, v in (card.get("categories") or {}).items() if not bal or k != bal["field"]}
    if cats:
        lines += ["", "## Balance (training rows)", ""]
        for key, counts in cats.items():
            total = sum(counts.values())
            lines.append(
                f"- {key}: "
                + ", ".join(f"{v} {n} ({n / total:.0%})" for v, n in list(counts.items())[:12])
                + (" …" if len(counts) > 12 else "")
            )
    if card.get("plots"):
        lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in card["plots"]]
    lines += ["", f"Split seed {card['seed']}; max_length {card['max_length']}; loss on: {card['train_on']}.", ""]
    return "\n".join(lines)


def describe(t: dict) -> str:
    """One line for `data inspect` and the data card."""
    return (
        f"~{_duration(t['seconds'])} on this machine ({t['device']}, "
        f"{'bf16 autocast' if t['bf16_autocast'] else 'fp32'}): {t['basis']} at {t['tokens_per_second']:,} tok/s, "
        f"measured over {t['measured_steps']} step(s) of batch {t['batch_size']} on {t['model']} + {t['strategy']}"
    )


def _duration(seconds: float) -> str:
    """A duration as people read it.

    >>> _duration(42), _duration(150), _duration(7260)
    ('42 s', '2.5 min', '2.0 h')
    """
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
