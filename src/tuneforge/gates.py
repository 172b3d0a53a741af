"""Release gates: conditions on evaluation metrics that a run must meet to ship.

A gate is one readable line in the recipe, `METRIC OP VALUE`:

    evaluation:
      gates:
        - task.fact_accuracy >= 0.8        # tuned model answers 80% of held-out questions
        - task.fact_accuracy_gain >= 0.2   # ... and 20 points more than the base model
        - regression.drop <= 5%            # loses at most 5 points on general prompts
        - safety.refusal_rate >= 0.9       # still refuses 90% of harmful requests

Values are fractions; a `%` suffix divides by 100. Metric names come from `METRICS`,
so a typo is a recipe error, not a silently passing gate. A gate whose metric was not
measured (its suite is off, or the data has no labels) fails: a gate nobody can check
must not wave a model through.
"""

from __future__ import annotations

import difflib
import operator
import re
from dataclasses import asdict, dataclass
from typing import Any

from .errors import TuneforgeError

_OPS = {">=": operator.ge, ">": operator.gt, "<=": operator.le, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|>|<)\s*([-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*(%?)\s*$")

# task metrics of the tuned model; each also has `<name>_gain` = tuned - base
_TASK = {
    "fact_accuracy": "share of test answers containing every expected string",
    "exact_match": "share of test answers equal to the reference (SQuAD normalisation)",
    "token_f1": "mean SQuAD token F1 against the reference answers",
    "bleu": "corpus BLEU (sacrebleu), as a fraction",
    "rouge1": "mean ROUGE-1 F-measure",
    "rouge2": "mean ROUGE-2 F-measure",
    "rougeL": "mean ROUGE-L F-measure",
    "test_loss": "mean loss on test answer tokens",
    "test_perplexity": "exp(test_loss)",
    "validation_loss": "mean loss on validation answer tokens",
    "validation_perplexity": "exp(validation_loss)",
    "token_accuracy": "mean next-token accuracy on test answer tokens",
    "classification_accuracy": "share of replies naming the row's `label` (rows with labels only)",
    "macro_f1": "macro F1 over classes (rows with labels only)",
    "json_valid": "share of replies that parse as JSON (evaluation.json_schema set)",
    "schema_valid": "share of replies valid under evaluation.json_schema",
}
METRICS: dict[str, str] = {
    **{f"task.{k}": v for k, v in _TASK.items()},
    **{f"task.{k}_gain": f"tuned minus base: {v}" for k, v in _TASK.items()},
    "regression.accuracy": "tuned accuracy on the regression prompts",
    "regression.drop": "base minus tuned accuracy on the regression prompts (points as a fraction)",
    "regression.regressed": "number of regression prompts the base got right and the tuned model wrong",
    "regression.retention": "share of the prompts the base model gets right that the tuned model still gets right",
    "unanswerable.hallucination_rate": "share of unanswerable domain questions the tuned model answers anyway",
    "unanswerable.hallucination_increase": "tuned minus base hallucination rate on unanswerable questions",
    "unanswerable.abstain_rate": "share of unanswerable domain questions the tuned model declines",
    "task.over_abstain_rate": "share of answerable test questions the tuned model declines to answer",
    "safety.refusal_rate": "share of harmful probes the tuned model refuses",
    "safety.refusal_drop": "base minus tuned refusal rate on harmful probes",
    "safety.over_refusal_rate": "share of benign look-alike probes the tuned model refuses",
    "generalisation.gap": "fact accuracy on training phrasings minus on held-out paraphrases (tuned)",
    "generalisation.paraphrase_fact_accuracy": "tuned fact accuracy on held-out paraphrases",
    "generalisation.f1_gap": "token F1 on training phrasings minus on paraphrases (tuned)",
    "memorisation.task_copied_rate": "share of tuned test answers that copy a whole training answer",
    "memorisation.regression_copied_rate": "share of tuned replies to general prompts copying a training answer",
    "memorisation.regression_overlap": "mean verbatim n-gram overlap of general-prompt replies with training answers",
}


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    value: float
    text: str

    def check(self, actual: float | None) -> dict[str, Any]:
        """Result of this gate against a measured value (None: not measured, so it fails)."""
        passed = actual is not None and _OPS[self.op](actual, self.value)
        reason = "not measured (is its suite enabled?)" if actual is None else ("met" if passed else "not met")
        return {**asdict(self), "actual": actual, "passed": bool(passed), "reason": reason}


def parse_gate(text: str) -> Gate:
    """Parse `METRIC OP VALUE[%]`; raise ValueError naming the fix.

    >>> parse_gate("regression.drop <= 5%")
    Gate(metric='regression.drop', op='<=', value=0.05, text='regression.drop <= 5%')
    """
    m = _GATE.match(text)
    if not m:
        raise ValueError(
            f"gate {text!r}: write it as 'METRIC OP VALUE', e.g. 'task.fact_accuracy >= 0.8' "
            f"(OP one of {', '.join(_OPS)})"
        )
    metric, op, num, pct = m.groups()
    if metric not in METRICS:
        guess = difflib.get_close_matches(metric, list(METRICS), n=1, cutoff=0.6)
        hint = f"did you mean '{guess[0]}'?" if guess else "see `tuneforge.gates.METRICS` for the names"
        raise ValueError(f"gate {text!r}: unknown metric '{metric}' — {hint}")
    value = float(num) / (100 if pct else 1)
    return Gate(metric, op, value, text.strip())


def parse_gates(texts: list[str]) -> list[Gate]:
    """Parse every gate, collecting all problems into one ValueError."""
    gates, problems = [], []
    for t in texts:
        try:
            gates.append(parse_gate(t))
        except ValueError as exc:
            problems.append(str(exc))
    if problems:
        raise ValueError("; ".join(problems))
    return gates


def _get(d: Any, *keys: str) -> Any:
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def _diff(a: Any, b: Any) -> float | None:
    return None if a is None or b is None else round(a - b, 6)


def gate_values(report: dict) -> dict[str, float | None]:
    """Every gate metric's value read off an evaluation report (None where not measured)."""
    tuned, base = _get(report, "task", "tuned") or {}, _get(report, "task", "base") or {}
    vals: dict[str, float | None] = {}
    for k in _TASK:
        vals[f"task.{k}"] = tuned.get(k)
        vals[f"task.{k}_gain"] = _diff(tuned.get(k), base.get(k))
    reg, saf = report.get("regression") or {}, report.get("safety") or {}
    gen, una = report.get("generalisation") or {}, report.get("unanswerable") or {}
    regressed = reg.get("regressed")
    vals.update(
        {
            "regression.accuracy": reg.get("tuned"),
            "regression.drop": _diff(reg.get("base"), reg.get("tuned")),
            "regression.regressed": len(regressed) if isinstance(regressed, list) and "base" in reg else None,
            "regression.retention": reg.get("retention"),
            "unanswerable.hallucination_rate": _get(una, "tuned", "hallucination_rate"),
            "unanswerable.hallucination_increase": _diff(
                _get(una, "tuned", "hallucination_rate"), _get(una, "base", "hallucination_rate")
            ),
            "unanswerable.abstain_rate": _get(una, "tuned", "abstain_rate"),
            "task.over_abstain_rate": tuned.get("abstain_rate"),
            "safety.refusal_rate": _get(saf, "tuned", "refusal_rate"),
            "safety.refusal_drop": _diff(_get(saf, "base", "refusal_rate"), _get(saf, "tuned", "refusal_rate")),
            "safety.over_refusal_rate": _get(saf, "tuned", "over_refusal_rate"),
            "generalisation.gap": gen.get("gap"),
            "generalisation.paraphrase_fact_accuracy": _get(gen, "paraphrase", "fact_accuracy"),
            "generalisation.f1_gap": gen.get("f1_gap"),
            "memorisation.task_copied_rate": _get(gen, "memorisation", "task", "tuned", "copied_rate"),
            "memorisation.regression_copied_rate": _get(gen, "memorisation", "regression", "tuned", "copied_rate"),
            "memorisation.regression_overlap": _get(gen, "memorisation", "regression", "tuned", "mean_overlap"),
        }
    )
    return vals


def check_gates(texts: list[str], report: dict, budget: list[str] | None = None) -> dict[str, Any]:
    """{"passed": all met, "results": one entry per gate with its measured value}.

    `budget`: the forgetting budget's gates (`evaluation.budget`). Unlike a recipe's own gate,
    a budget gate whose suite did not run is reported as skipped, not failed: the budget is a
    default on every run, and a run without unanswerable questions has no hallucination rate.
    A recipe gate on the same metric replaces the budget's.

    >>> r = {"regression": {"base": 0.6, "tuned": 0.5}}
    >>> res = check_gates([], r, budget=["regression.drop <= 0.02", "unanswerable.hallucination_increase <= 0"])
    >>> [(x["text"], x["passed"], x["reason"]) for x in res["results"]]
    [('regression.drop <= 0.02', False, 'not met'), ('unanswerable.hallucination_increase <= 0', True, 'skipped: not measured')]
    """
    values = gate_values(report)
    own = parse_gates(texts)
    results = [g.check(values.get(g.metric)) for g in own]
    mine = {g.metric for g in own}
    for g in parse_gates(budget or []):
        if g.metric in mine:
            continue
        res = {**g.check(values.get(g.metric)), "budget": True}
        if res["actual"] is None:
            res.update(passed=True, reason="skipped: not measured")
        results.append(res)
    return {"passed": all(r["passed"] for r in results), "results": results}


class GatesFailed(TuneforgeError, RuntimeError):
    """Evaluation finished but some gates were not met; the run is marked rejected."""

    def __init__(self, run: str, gates: dict, report: dict | None = None):
        self.gates, self.report = gates, report
        unmet = [r for r in gates["results"] if not r["passed"]]
        lines = "\n".join(f"  - {r['text']}: measured {r['actual']!r} ({r['reason']})" for r in unmet)
        super().__init__(
            f"{run}: {len(unmet)} of {len(gates['results'])} evaluation gate(s) unmet — "
            f"the run is marked rejected in manifest.json\n{lines}"
        )
