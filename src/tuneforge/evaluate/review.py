"""Human review: blind A/B export of two runs' answers and import of the ratings.

    tuneforge review export RUN_A RUN_B -o review/   # index.html + items.csv + key.json
    tuneforge review import review/ratings-*.json --key review/key.json

RUN_B may be the word `base`: RUN_A's tuned answers against its own base model's.
Ratings come back either as the page's downloaded JSON or as items.csv with the
`rating` column filled in (left / right / tie, or 1 / 2 / 0).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import random
from pathlib import Path
from typing import Any

from ..errors import TuneforgeError
from ..io import atomic_write_json, atomic_write_text
from .compare import load_evaluation
from .review_page import RATINGS_FORMAT, render_page


class ReviewError(TuneforgeError, ValueError):
    """A review export or ratings file that cannot be used (the message says how to fix it)."""


_CHOICES = {
    "left": "left",
    "1": "left",
    "l": "left",
    "right": "right",
    "2": "right",
    "r": "right",
    "tie": "tie",
    "0": "tie",
    "t": "tie",
    "=": "tie",
}


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (95% by default); (0, 1) when n = 0.

    Better than the normal approximation for small n and proportions near 0 or 1.

    >>> tuple(round(x, 4) for x in wilson_interval(7, 10))
    (0.3968, 0.8922)
    """
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def pair_answers(
    samples_a: list[dict], samples_b: list[dict], model_a: str, model_b: str, suites: tuple[str, ...]
) -> list[dict]:
    """Prompts answered in both, as {suite, question, expected, a, b} (matched by suite + question)."""
    index_b = {(s.get("suite", "task"), s["question"]): s for s in samples_b}
    pairs = []
    for s in samples_a:
        key = (s.get("suite", "task"), s["question"])
        t = index_b.get(key)
        if key[0] in suites and t is not None and model_a in s and model_b in t:
            pairs.append(
                {"suite": key[0], "question": key[1], "expected": s.get("expected"), "a": s[model_a], "b": t[model_b]}
            )
    return pairs


def blind_items(pairs: list[dict], seed: int) -> tuple[list[dict], dict[str, str]]:
    """Shuffle the order and flip a seeded coin per item for which side A is shown on.

    Returns (items with id/prompt/left/right, {id: side of A}).

    >>> items, key = blind_items([{"question": "q", "a": "x", "b": "y"}], seed=1)
    >>> (items[0]["left"] if key[items[0]["id"]] == "left" else items[0]["right"])
    'x'
    """
    rng = random.Random(seed)
    order = list(range(len(pairs)))
    rng.shuffle(order)
    items, key = [], {}
    for n, i in enumerate(order, 1):
        p = pairs[i]
        a_left = rng.random() < 0.5
        item_id = f"q{n:04d}"
        items.append(
            {
                "id": item_id,
                "prompt": p["question"],
                "left": p["a"] if a_left else p["b"],
                "right": p["b"] if a_left else p["a"],
            }
        )
        key[item_id] = "left" if a_left else "right"
    return items, key


def _items_csv(items: list[dict]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["id", "prompt", "left", "right", "rating"])
    for it in items:
        w.writerow([it["id"], it["prompt"], it["left"], it["right"], ""])
    return buf.getvalue()


def export_review(
    run_a: str | Path,
    run_b: str | Path,
    out_dir: str | Path,
    seed: int = 0,
    suites: tuple[str, ...] = ("task",),
    limit: int | None = None,
) -> dict[str, Any]:
    """Write index.html (blind page), items.csv and key.json for rating run A against run B."""
    rep_a, sam_a = load_evaluation(run_a)
    if str(run_b) == "base":
        sam_b, model_b, name_b = sam_a, "base", f"{Path(run_a).name} (base model)"
    else:
        sam_b, model_b, name_b = load_evaluation(run_b)[1], "tuned", Path(run_b).name
    pairs = pair_answers(sam_a, sam_b, "tuned", model_b, suites)
    if not pairs:
        raise ReviewError(
            f"no prompts answered by both {run_a} and {run_b} in suites {', '.join(suites)} — "
            f"evaluate both on the same test data (for the base model, evaluate with --base)"
        )
    # identical answers are ties by construction: do not spend a rater's time on them
    differing = [p for p in pairs if p["a"].strip() != p["b"].strip()]
    identical = len(pairs) - len(differing)
    differing = differing[:limit] if limit else differing
    items, sides = blind_items(differing, seed)
    review_id = hashlib.sha256(json.dumps([items, sides], sort_keys=True).encode()).hexdigest()[:16]
    out = Path(out_dir)
    key = {
        "format": "tuneforge-review-key/1",
        "review_id": review_id,
        "seed": seed,
        "a": Path(run_a).name,
        "b": name_b,
        "a_path": str(run_a),
        "b_path": str(run_b),
        "suites": list(suites),
        "identical_skipped": identical,
        "a_side": sides,
        "items": {it["id"]: {"question": it["prompt"]} for it in items},
    }
    atomic_write_text(out / "index.html", render_page("Blind A/B review", review_id, items))
    atomic_write_text(out / "items.csv", _items_csv(items))
    atomic_write_json(out / "key.json", key)
    return {"dir": str(out), "items": len(items), "identical_skipped": identical, "review_id": review_id}


def read_ratings(path: str | Path) -> tuple[str | None, str, dict[str, str]]:
    """(review_id or None, rater, {id: left|right|tie}) from a downloaded JSON or a filled-in CSV."""
    p = Path(path)
    text = p.read_text(encoding="utf-8-sig")
    if p.suffix.lower() == ".csv":
        rows = list(csv.DictReader(io.StringIO(text)))
        if rows and not {"id", "rating"} <= set(rows[0]):
            raise ReviewError(f"{p}: a ratings CSV needs 'id' and 'rating' columns (items.csv from the export)")
        raw = {r["id"]: r["rating"] for r in rows if (r.get("rating") or "").strip()}
        review_id, rater = None, p.stem
    else:
        data = json.loads(text)
        if not isinstance(data, dict) or data.get("format") != RATINGS_FORMAT:
            raise ReviewError(f"{p}: not a ratings file of the review page (format {RATINGS_FORMAT})")
        raw, review_id, rater = data.get("ratings") or {}, data.get("review_id"), data.get("rater") or p.stem
    ratings = {}
    for item_id, v in raw.items():
        choice = _CHOICES.get(str(v).strip().lower())
        if choice is None:
            raise ReviewError(f"{p}: item {item_id}: rating {v!r} — use left, right or tie (or 1, 2, 0)")
        ratings[item_id] = choice
    return review_id, rater, ratings


def import_ratings(paths: list[str | Path], key_path: str | Path) -> dict[str, Any]:
    """Unblind the ratings with key.json; A's win rate over decided items with a Wilson 95% CI."""
    key = json.loads(Path(key_path).read_text(encoding="utf-8"))
    sides = key["a_side"]
    wins_a = wins_b = ties = 0
    raters: dict[str, dict[str, int]] = {}
    for path in paths:
        review_id, rater, ratings = read_ratings(path)
        if review_id is not None and review_id != key["review_id"]:
            raise ReviewError(
                f"{path}: ratings belong to review {review_id}, the key is for {key['review_id']} — "
                f"pass the key.json of the same export"
            )
        unknown = sorted(set(ratings) - set(sides))
        if unknown:
            raise ReviewError(f"{path}: item ids not in this review: {', '.join(unknown[:5])}")
        r = raters.setdefault(rater, {"a": 0, "b": 0, "tie": 0})
        for item_id, choice in ratings.items():
            if choice == "tie":
                ties, r["tie"] = ties + 1, r["tie"] + 1
            elif choice == sides[item_id]:
                wins_a, r["a"] = wins_a + 1, r["a"] + 1
            else:
                wins_b, r["b"] = wins_b + 1, r["b"] + 1
    decided = wins_a + wins_b
    low, high = wilson_interval(wins_a, decided)
    total = decided + ties
    return {
        "a": key["a"],
        "b": key["b"],
        "items": len(sides),
        "ratings": total,
        "wins_a": wins_a,
        "wins_b": wins_b,
        "ties": ties,
        "identical_skipped": key.get("identical_skipped", 0),
        "win_rate_a": wins_a / decided if decided else None,
        "ci95": [low, high],
        "win_rate_a_ties_half": (wins_a + ties / 2) / total if total else None,
        "raters": raters,
    }


def render_result(res: dict) -> str:
    """One paragraph a person can paste into a release note."""
    if res["win_rate_a"] is None:
        return f"{res['ratings']} ratings, no decided pair (all ties) — no win rate."
    lo, hi = res["ci95"]
    verdict = "A is preferred" if lo > 0.5 else "B is preferred" if hi < 0.5 else "no significant preference"
    return (
        f"A = {res['a']} vs B = {res['b']}: A wins {res['wins_a']}, B wins {res['wins_b']}, ties {res['ties']} "
        f"({res['ratings']} ratings by {len(res['raters'])} rater(s)). Win rate of A over decided pairs "
        f"{100 * res['win_rate_a']:.1f}% (95% Wilson CI {100 * lo:.1f}–{100 * hi:.1f}%): {verdict}."
    )
