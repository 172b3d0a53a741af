"""Where the time of a tuneforge SFT step goes: torch.profiler over real training steps.

    .venv/bin/python bench/train_profile.py [--dataset demo|synthetic] [--warmup 3] [--steps 4]

Trains the embedded SmolLM2-135M-Instruct through the default path (`tuneforge train`
on the bench data of bench/train_throughput.py), profiles `--steps` optimiser steps
after `--warmup`, and prints the self CPU time per op family (matmuls, attention,
element-wise, norms, the loss head, optimiser, other) with the matmul FLOP rate, so the
gap to the bf16 roofline can be read off. Results go to bench/results/train_profile.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "bench"))

FAMILIES = [  # first match wins: (family, substrings of the profiler's op name)
    ("attention", ("scaled_dot_product", "flash_attention", "aten::bmm", "_softmax")),
    ("loss head", ("_LinearCrossEntropy", "logsumexp", "cross_entropy", "log_softmax", "nll_loss", "gather")),
    ("matmul", ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul", "aten::linear")),
    ("optimizer", ("Optimizer", "adam", "_foreach", "clip_grad")),
    ("norm / activation", ("rsqrt", "pow", "mean", "silu", "sigmoid")),
    ("casts / copies", ("aten::to", "aten::_to_copy", "aten::copy_", "aten::clone", "aten::contiguous", "cat")),
    (
        "element-wise",
        (
            "aten::mul",
            "aten::add",
            "aten::sub",
            "aten::div",
            "aten::neg",
            "aten::exp",
            "aten::fill_",
            "aten::zero_",
            "aten::index",
            "aten::where",
        ),
    ),
]


def family(name: str) -> str:
    for fam, keys in FAMILIES:
        if any(k in name for k in keys):
            return fam
    return "other"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="demo", choices=["demo", "synthetic"])
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--override", action="append", default=[], help="tuneforge recipe override (repeatable)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_profile.json"))
    args = ap.parse_args()

    import torch
    from train_throughput import BATCH, DATASETS, LORA, LR, SEED
    from transformers import TrainerCallback

    from tuneforge.model.sources import resolve
    from tuneforge.pipeline import prepare_stage
    from tuneforge.recipe import load_recipe
    from tuneforge.train.sft import train

    prof = torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU], with_flops=True)
    window: dict[str, float] = {}

    class Window(TrainerCallback):
        def on_step_begin(self, a, state, control, **kw):
            if state.global_step == args.warmup:
                prof.__enter__()

        def on_step_end(self, a, state, control, **kw):
            if state.global_step == args.warmup + args.steps:
                prof.__exit__(None, None, None)
                window["done"] = 1

    rows = DATASETS[args.dataset]()
    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "train.jsonl"
        data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
        recipe = load_recipe(
            None,
            [
                "name=profile",
                f"output_dir={work}/runs",
                f"model.base={resolve('smollm2-135m-instruct').path}",
                f"data.train={data}",
                "data.validation_fraction=0",
                "data.test_fraction=0",
                "data.max_length=2048",
                f"strategy.r={LORA['r']}",
                f"strategy.alpha={LORA['alpha']}",
                f"training.max_steps={args.warmup + args.steps}",
                f"training.batch_size={BATCH}",
                f"training.learning_rate={LR}",
                f"training.seed={SEED}",
                "training.eval_strategy=no",
                "training.save_strategy=steps",
                "training.save_steps=1000000",
                *args.override,
            ],
        )
        run, _ = prepare_stage(recipe)
        info = train(run, callbacks=[Window()])
    if not window:
        raise SystemExit("the profiled window did not complete — raise the step count")

    per: dict[str, dict[str, float]] = defaultdict(lambda: {"ms": 0.0, "flops": 0.0})
    total_ms = 0.0
    for ev in prof.key_averages():
        ms = ev.self_cpu_time_total / 1000
        total_ms += ms
        fam = family(ev.key)
        per[fam]["ms"] += ms
        per[fam]["flops"] += ev.flops or 0
    table = {
        fam: {
            "ms_per_step": round(v["ms"] / args.steps, 1),
            "share": round(v["ms"] / total_ms, 3),
            **({"gflop_s": round(v["flops"] / (v["ms"] / 1000) / 1e9, 1)} if v["flops"] and v["ms"] else {}),
        }
        for fam, v in sorted(per.items(), key=lambda kv: -kv[1]["ms"])
    }
    top = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)[:30]
    out = {
        "dataset": args.dataset,
        "steps_profiled": args.steps,
        "threads": torch.get_num_threads(),
        "tokens_per_s_whole_run": info.get("tokens_per_second"),
        "families": table,
        "top_ops": [
            {
                "op": e.key,
                "ms_per_step": round(e.self_cpu_time_total / 1000 / args.steps, 1),
                "calls_per_step": e.count // args.steps,
            }
            for e in top
        ],
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
