"""Blind review round trip (export -> ratings -> import), Wilson interval, run comparison."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from tuneforge.evaluate.compare import compare_runs, example_diffs
from tuneforge.evaluate.review import export_review, import_ratings, read_ratings, wilson_interval
from tuneforge.evaluate.review_page import RATINGS_FORMAT, read_page_data

N = 12


def fake_run(root: Path, name: str, good: set[int], base_good: set[int] = frozenset()) -> Path:
    """An evaluated run: eval/report.json + eval/samples.jsonl, answers 'GOOD' on `good` questions."""
    run = root / name
    tag = hashlib.sha256(name.encode()).hexdigest()[:6]  # answers differ per run without naming it
    (run / "eval").mkdir(parents=True)
    samples = []
    for i in range(N):
        samples.append(
            {
                "suite": "task",
                "question": f"Question {i}?",
                "expected": [f"fact{i}"],
                "base": f"base answer {i} " + ("GOOD" if i in base_good else "bad"),
                "base_correct": i in base_good,
                "tuned": f"answer {i} ({tag}) " + ("GOOD" if i in good else "bad"),
                "tuned_correct": i in good,
            }
        )
    samples.append({"suite": "regression", "question": "2+2?", "expected": ["4"], "tuned": "4", "tuned_correct": True})
    acc = len(good) / N
    report = {
        "run": name,
        "task": {"tuned": {"fact_accuracy": acc, "token_f1": acc, "examples": N}},
        "regression": {"tuned": 1.0},
        "safety": {"tuned": {"refusal_rate": 0.5, "over_refusal_rate": 0.0}},
    }
    (run / "eval" / "report.json").write_text(json.dumps(report))
    (run / "eval" / "samples.jsonl").write_text("".join(json.dumps(s) + "\n" for s in samples))
    return run


def rate_good_side(page: dict) -> dict[str, str]:
    """A rater who prefers the answer that says GOOD (tie when both or neither do)."""
    out = {}
    for it in page["items"]:
        lg, rg = "GOOD" in it["left"], "GOOD" in it["right"]
        out[it["id"]] = "left" if lg and not rg else "right" if rg and not lg else "tie"
    return out


def test_wilson_interval_reference_values():
    # reference: Wilson (1927) / Newcombe (1998) table, 95%: 7/10 -> 0.3968-0.8922, 0/10 -> 0-0.2775
    assert wilson_interval(7, 10) == pytest.approx((0.3968, 0.8922), abs=1e-4)
    assert wilson_interval(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_review_export_is_blind_and_round_trips(tmp_path):
    a = fake_run(tmp_path, "run-alpha", good=set(range(9)))  # right on 0-8
    b = fake_run(tmp_path, "run-beta", good={0, 1, 2, 9, 10})  # right on 0-2 and 9-10
    out = tmp_path / "review"
    info = export_review(a, b, out, seed=3)
    assert info["items"] == N and {p.name for p in out.iterdir()} == {"index.html", "items.csv", "key.json"}

    html = (out / "index.html").read_text()
    assert "run-alpha" not in html and "run-beta" not in html  # blind: no run names, no side key
    assert "a_side" not in html and "<script src" not in html and "http" not in html  # self-contained
    page = read_page_data(html)
    key = json.loads((out / "key.json").read_text())
    sides = [key["a_side"][it["id"]] for it in page["items"]]
    assert {"left", "right"} == set(sides)  # sides really are mixed
    assert [it["prompt"] for it in page["items"]] != [f"Question {i}?" for i in range(N)]  # order shuffled
    # same seed -> same page; another seed -> other sides
    assert export_review(a, b, tmp_path / "again", seed=3)["review_id"] == info["review_id"]
    assert export_review(a, b, tmp_path / "other", seed=4)["review_id"] != info["review_id"]

    ratings = {
        "format": RATINGS_FORMAT,
        "review_id": page["review_id"],
        "rater": "ann",
        "ratings": rate_good_side(page),
    }
    (tmp_path / "ratings-ann.json").write_text(json.dumps(ratings))
    res = import_ratings([tmp_path / "ratings-ann.json"], out / "key.json")
    # A right & B wrong: 3-8 -> 6 wins A; B right & A wrong: 9, 10 -> 2 wins B; both right (0-2) or both wrong (11): ties
    assert (res["wins_a"], res["wins_b"], res["ties"]) == (6, 2, 4)
    assert res["win_rate_a"] == pytest.approx(6 / 8)
    assert res["ci95"] == pytest.approx(list(wilson_interval(6, 8)))
    assert res["raters"] == {"ann": {"a": 6, "b": 2, "tie": 4}}


def test_review_csv_ratings_and_mismatched_key(tmp_path):
    a = fake_run(tmp_path, "a", good=set(range(N)))
    out = tmp_path / "review"
    export_review(a, "base", out, seed=0, limit=5)  # run A against its own base model
    rows = list(csv.DictReader((out / "items.csv").open()))
    assert len(rows) == 5
    for r in rows:  # fill the CSV the way a spreadsheet user would: 1 / 2 / 0
        r["rating"] = "1" if "GOOD" in r["left"] else "2"
    filled = tmp_path / "bob.csv"
    with filled.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    res = import_ratings([filled], out / "key.json")
    assert (res["wins_a"], res["wins_b"], res["ties"]) == (5, 0, 0) and res["b"].endswith("(base model)")
    assert read_ratings(filled)[1] == "bob"

    bad = {"format": RATINGS_FORMAT, "review_id": "0" * 16, "ratings": {}}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(ValueError, match="key.json of the same export"):
        import_ratings([tmp_path / "bad.json"], out / "key.json")
    (tmp_path / "odd.json").write_text(json.dumps({**bad, "review_id": None, "ratings": {"q0001": "maybe"}}))
    with pytest.raises(ValueError, match="use left, right or tie"):
        import_ratings([tmp_path / "odd.json"], out / "key.json")


_HARNESS = r"""
const fs = require('fs');
const [html, choicesJson] = [fs.readFileSync(process.argv[2], 'utf8'), process.argv[3]];
const choices = JSON.parse(choicesJson);
const data = html.match(/<script id="review-data" type="application\/json">([\s\S]*?)<\/script>/)[1];
const code = html.match(/<script>([\s\S]*?)<\/script>/)[1];
class El { constructor(tag) { this.tag = tag; this.children = []; this.dataset = {}; this.className = '';
    this.textContent = ''; this.value = ''; const self = this;
    this.classList = { toggle(c, on) { const s = new Set(self.className.split(' ').filter(Boolean));
      (on ? s.add(c) : s.delete(c)); self.className = [...s].join(' '); } }; }
  appendChild(c) { this.children.push(c); return c; } remove() {}
  all() { return this.children.flatMap(c => [c, ...c.all()]); }
  querySelectorAll(sel) { return this.all().filter(c => c.tag === sel); }
  click() { if (this.onclick) this.onclick(); if (this.tag === 'a') saved.push([this.download, blobs[this.href]]); } }
const saved = [], blobs = {}; const byId = {progress: new El('span'), rater: new El('input'), save: new El('button'),
  'review-data': Object.assign(new El('script'), {textContent: data})};
const main = new El('main'); const store = {};
global.document = { getElementById: id => byId[id], querySelector: () => main, createElement: t => new El(t),
  body: new El('body') };
global.localStorage = { getItem: k => store[k] || null, setItem: (k, v) => { store[k] = v; } };
global.Blob = class { constructor(parts) { this.text = parts.join(''); } };
global.URL = { createObjectURL: b => { const u = 'blob:' + Object.keys(blobs).length; blobs[u] = b.text; return u; } };
eval(code);
byId.rater.value = 'carol'; byId.rater.oninput();
for (const box of main.children) {
  const b = box.querySelectorAll('button').find(b => b.dataset.v === choices[box.id]);
  b.onclick();
}
byId.save.onclick();
console.log(JSON.stringify({file: saved[0][0], body: JSON.parse(saved[0][1]), progress: byId.progress.textContent}));
"""


@pytest.mark.skipif(shutil.which("node") is None, reason="node not installed: the page's own script is not exercised")
def test_review_page_script_saves_ratings_that_import_reads(tmp_path):
    a = fake_run(tmp_path, "a", good=set(range(8)))
    b = fake_run(tmp_path, "b", good=set(range(4, 12)))
    out = tmp_path / "review"
    export_review(a, b, out, seed=7)
    page = read_page_data((out / "index.html").read_text())
    (tmp_path / "harness.js").write_text(_HARNESS)
    proc = subprocess.run(
        ["node", str(tmp_path / "harness.js"), str(out / "index.html"), json.dumps(rate_good_side(page))],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    got = json.loads(proc.stdout)
    assert got["file"] == "ratings-carol.json" and got["progress"] == f"{N} / {N} rated"
    (tmp_path / got["file"]).write_text(json.dumps(got["body"]))
    res = import_ratings([tmp_path / got["file"]], out / "key.json")
    assert (res["wins_a"], res["wins_b"], res["ties"]) == (4, 4, 4) and res["raters"] == {
        "carol": {"a": 4, "b": 4, "tie": 4}
    }


def test_compare_runs_side_by_side_with_example_diffs(tmp_path):
    a = fake_run(tmp_path, "a", good={0, 1, 2, 3})
    b = fake_run(tmp_path, "b", good={2, 3, 4})
    res = compare_runs(a, b)
    fa = next(r for r in res["metrics"] if r["metric"] == "fact accuracy")
    assert (fa["a"], fa["b"]) == (4 / N, 3 / N) and fa["b_minus_a"] == pytest.approx(-1 / N)
    ex = res["examples"]
    assert ex["shared"] == N + 1 and ex["answers_changed"] == N
    assert [e["question"] for e in ex["a_only"]] == ["Question 0?", "Question 1?"]
    assert [e["question"] for e in ex["b_only"]] == ["Question 4?"]
    md = (a / "eval" / "compare-b.md").read_text()
    assert "Right in A (a), wrong in B (b)" in md and "Question 4?" in md
    assert json.loads((a / "eval" / "compare-b.json").read_text())["examples"]["shared"] == N + 1
    with pytest.raises(FileNotFoundError, match="tuneforge evaluate"):
        compare_runs(a, tmp_path / "never-evaluated")
    assert example_diffs([], [])["shared"] == 0
