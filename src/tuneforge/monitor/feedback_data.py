"""`tuneforge data from-feedback`: user feedback in the request log → training data.

- A correction becomes an SFT row: the logged conversation + the corrected answer.
- Preference rows (prompt / chosen / rejected) come from (a) a thumbs-up and a thumbs-down
  answer to the same prompt, and (b) a correction of a thumbs-down (or uncorrected) answer:
  the correction is chosen, the model's answer rejected.
- Every row is PII-redacted (data/pii.py placeholders) — user traffic is full of it.
- SFT rows that (near-)copy existing data (the run's training split, `--against` files) or
  each other are dropped (data/dedup.py, the same similarity the data stage uses); repeated
  preference rows are dropped by their normalised text.

Each row carries `provenance` (request id, served model, rating) like augmented rows do, so
the loader keeps it as metadata. Requests logged without content (`serve` without
`--log-content`) cannot become data; they are counted and skipped.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Optional

from ..data.pii import TYPES, redact_row
from .stats import completion_texts, maybe_json


def _conversation(raw: Optional[str]) -> Optional[list[dict]]:
    """The logged prompt as chat messages (a completion prompt becomes one user turn)."""
    p = maybe_json(raw)
    if isinstance(p, list) and p and all(isinstance(m, dict) for m in p):
        msgs = [{"role": m.get("role"), "content": m.get("content")} for m in p]
        return msgs if all(isinstance(m["content"], str) for m in msgs) else None
    if isinstance(p, list) and len(p) == 1:
        p = p[0]
    return [{"role": "user", "content": p}] if isinstance(p, str) else None


def _prompt_value(msgs: list[dict]) -> Any:
    """A single user turn as a plain string (most readable), else the message list."""
    return msgs[0]["content"] if len(msgs) == 1 and msgs[0]["role"] == "user" else msgs


def _key(value: Any) -> str:
    from ..data.dedup import normalise_text

    return hashlib.sha256(normalise_text(json.dumps(value, ensure_ascii=False)).encode()).hexdigest()


def feedback_rows(feedback: list[dict]) -> tuple[list[dict], list[dict], Counter]:
    """(sft rows, preference rows, skipped-by-reason) from joined feedback/request rows."""
    sft, pairs, skipped = [], [], Counter()
    by_prompt: dict[str, dict[str, list]] = {}
    for f in feedback:
        msgs = _conversation(f["prompt"])
        answers = completion_texts(f["completion"])
        if f["status"] is not None and f["status"] >= 400:
            skipped["failed_request"] += 1
            continue
        if msgs is None or not answers:
            skipped["no_logged_content"] += 1
            continue
        answer = answers[0]
        prov = {"source": "feedback", "request_id": f["request_id"], "model": f["model"], "rating": f["rating"]}
        correction = (f["correction"] or "").strip()
        if correction:
            sft.append({"messages": msgs + [{"role": "assistant", "content": correction}], "provenance": prov})
            if f["rating"] != "up" and correction != answer.strip():
                pairs.append(
                    {
                        "prompt": _prompt_value(msgs),
                        "chosen": correction,
                        "rejected": answer,
                        "provenance": {**prov, "pair": "correction"},
                    }
                )
        if f["rating"] in ("up", "down"):
            slot = by_prompt.setdefault(_key(msgs), {"msgs": msgs, "up": [], "down": []})
            slot[f["rating"]].append((answer, f["request_id"]))
        elif not correction:
            skipped["no_rating_or_correction"] += 1
    for slot in by_prompt.values():
        for good, good_id in slot["up"]:
            for bad, bad_id in slot["down"]:
                if good.strip() != bad.strip():
                    pairs.append(
                        {
                            "prompt": _prompt_value(slot["msgs"]),
                            "chosen": good,
                            "rejected": bad,
                            "provenance": {
                                "source": "feedback",
                                "pair": "rated",
                                "chosen_request_id": good_id,
                                "rejected_request_id": bad_id,
                            },
                        }
                    )
    return sft, pairs, skipped


def load_existing(paths: Iterable[str | Path]) -> list[dict]:
    """Rows of existing data files, normalised to messages, for deduplication."""
    from ..data.formats import RowError, detect_format, normalise
    from ..data.load import read_rows

    out = []
    for p in paths:
        raw, _ = read_rows(p)
        fmt = detect_format([r.value for r in raw])
        if fmt is None:
            continue
        for r in raw:
            try:
                out.append(normalise(r.value, fmt, require_assistant=False))
            except RowError:
                continue
    return out


def from_feedback(
    log: str | Path,
    out: str | Path,
    pairs_out: Optional[str | Path] = None,
    run_dir: Optional[str | Path] = None,
    against: Iterable[str | Path] = (),
    threshold: float = 0.8,
    pii_types: Iterable[str] = TYPES,
    pii_allow: Iterable[str] = (),
) -> dict:
    """Write SFT rows to `out` and preference rows to `pairs_out` (default OUT.preference.jsonl)."""
    from ..data.dedup import dedup_rows, find_leaks
    from ..io import atomic_write_jsonl
    from .requestlog import read_feedback

    if not Path(log).is_file():
        raise FileNotFoundError(f"{log}: no request log here — give the server's --request-log file")
    out = Path(out)
    pairs_out = Path(pairs_out) if pairs_out else out.with_name(out.stem + ".preference.jsonl")
    feedback = read_feedback(log)
    sft, pairs, skipped = feedback_rows(feedback)
    pii: Counter = Counter()
    types, allow = tuple(pii_types), tuple(pii_allow)

    def redact(rows: list[dict]) -> list[dict]:
        done = []
        for r in rows:
            prov = r.pop("provenance")
            new, c = redact_row(r, types, allow)
            pii.update(c)
            done.append({**new, "provenance": prov})
        return done

    sft, pairs = redact(sft), redact(pairs)
    existing_files = [Path(p) for p in against]
    if run_dir is not None:
        from ..run import RunDir

        existing_files.append(RunDir(run_dir).require().split_file("train"))
    # compared redacted with redacted: a correction that repeats a training row holding a name or
    # an address is a copy even though the feedback side now reads "<PERSON> co-founded …"
    existing = [redact_row(r, types, allow)[0] for r in load_existing([p for p in existing_files if p.is_file()])]
    copies = {x["other_index"] for x in find_leaks(existing, sft, threshold)} if existing and sft else set()
    fresh = [r for i, r in enumerate(sft) if i not in copies]
    kept, dup = dedup_rows(fresh, "near", threshold)
    seen, unique_pairs = set(), []
    for p in pairs:
        k = _key([p["prompt"], p["chosen"], p["rejected"]])
        if k not in seen:
            seen.add(k)
            unique_pairs.append(p)
    atomic_write_jsonl(out, kept)
    atomic_write_jsonl(pairs_out, unique_pairs)
    return {
        "feedback": len(feedback),
        "sft_rows": len(kept),
        "preference_rows": len(unique_pairs),
        "sft_out": str(out),
        "preference_out": str(pairs_out),
        "skipped": dict(skipped),
        "dropped": {
            "copies_of_existing_data": len(copies),
            "duplicates": dup["exact"] + dup["near"],
            "duplicate_pairs": len(pairs) - len(unique_pairs),
        },
        "pii_redacted": dict(sorted(pii.items())),
        "existing_rows_checked": len(existing),
    }
