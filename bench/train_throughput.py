"""Training throughput: tuneforge's SFT path vs TRL SFTTrainer + PEFT LoRA, side by side.

    .venv/bin/python bench/train_throughput.py [--steps 8] [--repeats 3] [--datasets demo,synthetic]
        [--sides trl,trl-fp32,trl-fp32-nogc,tuneforge] [--peer-budget-s 300] [--layers K]

Every side trains the embedded SmolLM2-135M-Instruct with the same LoRA config (r16,
alpha 32, all-linear; with --layers K on the last K layers only, on every side), the same data, steps, effective batch, learning rate, schedule
and seed. The peer runs two ways: `trl` keeps TRL's library defaults for everything that
affects speed (SFTConfig's bf16=True among them), `trl-fp32` is what a competent user sets
on a CPU without bf16 units (bf16=False), `trl-fp32-nogc` also turns off SFTConfig's default
gradient checkpointing (memory traded for speed, which a 135M model on a machine with GBs to
spare does not need); the ratio that counts is against the fastest peer. A peer run that has not finished its steps after --peer-budget-s stops there and is
timed over the steps it did (an emulated-bf16 run can take an hour for 8 steps); its loss is
then not compared. Repeats are interleaved (A B A B …) so machine noise hits every side;
each run is a fresh child process so its peak RSS is its own. Reported per side (medians):
real (non-pad) trained tokens/s, peak RSS, and the loss of the trained model on a fixed
held-out set (same loss function for all: mean cross-entropy over assistant tokens).

The CPU it ran on (model, flags, torch's kernel level, ISA caps in the environment) is
printed first and stored with the results. To see an AVX2-only machine's behaviour on a
newer CPU: ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "examples" / "demo"
LORA = dict(r=16, alpha=32)
N_LAYERS = 30  # SmolLM2-135M's decoder layers
LR, BATCH, SEED = 1e-3, 8, 42
DATA_OPTIONS = ("data.validation_fraction=0", "data.test_fraction=0", "data.max_length=2048")


# ----------------------------------------------------------------------------- data
def demo_rows() -> list[list[dict]]:
    return [json.loads(l)["messages"] for l in (DEMO / "train.jsonl").read_text().splitlines()]


def synthetic_rows(n: int = 240, seed: int = 0) -> list[list[dict]]:
    """Longer, more varied chats: handbook passages as context, a question, a long or short answer."""
    rng = random.Random(seed)
    paras = [json.loads(l)["text"] for l in (DEMO / "handbook.jsonl").read_text().splitlines()]
    base = demo_rows()
    out = []
    for _ in range(n):
        msgs = base[rng.randrange(len(base))]
        ctx = " ".join(rng.sample(paras, rng.randint(0, 4)))
        q = (f"Context:\n{ctx}\n\nQuestion: " if ctx else "") + msgs[0]["content"]
        a = msgs[1]["content"] + (" " + " ".join(rng.sample(paras, rng.randint(1, 2))) if rng.random() < 0.4 else "")
        out.append([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    return out


DATASETS = {"demo": demo_rows, "synthetic": synthetic_rows}


# ----------------------------------------------------------------------------- sides
def held_out_loss(model, tok, rows) -> float:
    from tuneforge.evaluate.metrics import mean_loss

    return mean_loss(model, tok, [{"messages": m} for m in rows])["loss"]


def side_trl(rows, steps, workdir, model_path, fp32=False, budget_s=None, layers=None, checkpointing=True):
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    tok = AutoTokenizer.from_pretrained(model_path)
    # prompt/completion conversational rows: TRL then trains on the completion only, as tuneforge does
    ds = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in rows])
    cfg = SFTConfig(
        output_dir=str(workdir),
        max_steps=steps,
        per_device_train_batch_size=BATCH,
        learning_rate=LR,
        lr_scheduler_type="cosine",
        warmup_steps=0.05,
        seed=SEED,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        use_cpu=True,
        disable_tqdm=True,
        # trl-fp32: the one switch a user on a CPU without bf16 units flips; `trl` keeps the default
        **({"bf16": False} if fp32 else {}),
        # trl-fp32-nogc: also TRL's gradient checkpointing (on by default in SFTConfig) off, as a user
        # with memory to spare sets it for speed; it also lets layers_to_transform cut backward work
        **({} if checkpointing else {"gradient_checkpointing": False}),
    )
    # --layers K: PEFT's own layers_to_transform, the same adapters tuneforge's strategy.layers puts on
    # (PEFT takes it only with module names, not 'all-linear')
    targets = (
        "all-linear" if not layers else ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )
    lora = LoraConfig(
        r=LORA["r"],
        lora_alpha=LORA["alpha"],
        target_modules=targets,
        layers_to_transform=list(range(N_LAYERS - layers, N_LAYERS)) if layers else None,
        task_type="CAUSAL_LM",
    )
    trainer = SFTTrainer(model=model_path, args=cfg, train_dataset=ds, processing_class=tok, peft_config=lora)
    batches: list[int] = []  # real tokens per collated batch (the loader may collate one ahead)
    inner = trainer.data_collator

    def counting(features):
        batch = inner(features)
        mask = batch.get("attention_mask")
        batches.append(int(mask.sum()) if mask is not None else int(batch["input_ids"].numel()))
        return batch

    class Budget(TrainerCallback):
        """Stop after `budget_s` seconds of training; record the steps done and when."""

        def __init__(self):
            self.steps, self.t_end = 0, None

        def on_step_end(self, args, state, control, **kw):
            self.steps, self.t_end = state.global_step, time.perf_counter()
            if budget_s and self.t_end - t0 > budget_s and state.global_step < steps:
                control.should_training_stop = True

    budget = Budget()
    trainer.add_callback(budget)
    trainer.data_collator = counting
    t0 = time.perf_counter()
    trainer.train()
    seconds = (budget.t_end or time.perf_counter()) - t0
    tokens = sum(batches[: budget.steps])  # gradient accumulation is 1: one batch per step
    return trainer.model, tok, tokens, seconds, peak_rss_mb(), budget.steps


def side_tuneforge(rows, steps, workdir, model_path, overrides=()):
    from tuneforge.model.load import load_trained
    from tuneforge.pipeline import prepare_stage
    from tuneforge.recipe import load_recipe
    from tuneforge.train.sft import train

    data = Path(workdir) / "train.jsonl"
    data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in rows))
    recipe = load_recipe(
        None,
        [
            "name=bench",
            f"output_dir={workdir}/runs",
            f"model.base={model_path}",
            f"data.train={data}",
            *DATA_OPTIONS,
            # the rows are prepare's output already (replay rows included): a second replay pass
            # would add rows TRL never sees and reshuffle the order both sides are meant to share
            "data.replay.enabled=false",
            f"strategy.r={LORA['r']}",
            f"strategy.alpha={LORA['alpha']}",
            f"training.max_steps={steps}",
            f"training.batch_size={BATCH}",
            f"training.learning_rate={LR}",
            "training.scheduler=cosine",
            "training.warmup_ratio=0.05",
            f"training.seed={SEED}",
            "training.eval_strategy=no",
            "training.save_strategy=steps",
            "training.save_steps=1000000",
            *overrides,
        ],
    )
    run, _ = prepare_stage(recipe)
    info = train(run)
    rss = peak_rss_mb()  # before the trained model is loaded back for the held-out loss
    model, tok, _ = load_trained(run)
    return model, tok, info["tokens_seen"], info["seconds"], rss, info["steps"]


def peak_rss_mb() -> float:
    """VmHWM of this process (Linux), else ru_maxrss."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def training_rows(name: str, out: Path) -> Path:
    """The dataset as tuneforge's prepare stage leaves it (deduplicated, in its seeded order),
    written to `out` for both sides: the same rows in the same order, so with the same sampler
    seed both sides train on the same examples step by step."""
    from tuneforge.io import read_jsonl
    from tuneforge.model.sources import resolve
    from tuneforge.pipeline import prepare_stage
    from tuneforge.recipe import load_recipe

    with tempfile.TemporaryDirectory() as work:
        data = Path(work) / "train.jsonl"
        data.write_text("".join(json.dumps({"messages": m}) + "\n" for m in DATASETS[name]()))
        recipe = load_recipe(
            None,
            [
                "name=rows",
                f"output_dir={work}/runs",
                f"data.train={data}",
                f"model.base={resolve('smollm2-135m-instruct').path}",
                *DATA_OPTIONS,
            ],
        )
        run, _ = prepare_stage(recipe)
        out.write_text("".join(json.dumps(r["messages"]) + "\n" for r in read_jsonl(run.split_file("train"))))
    return out


def child(args) -> None:
    from tuneforge.model.sources import resolve

    os.environ["TQDM_DISABLE"] = "1"
    rows = [json.loads(line) for line in Path(args.rows).read_text().splitlines()]
    held_out = rows[:48]
    model_path = resolve("smollm2-135m-instruct").path
    with tempfile.TemporaryDirectory() as work:
        # rss: the high-water mark of training itself, taken before the held-out loss (which
        # may load another copy of the model)
        if args.side == "tuneforge":
            layers = [f"strategy.layers={args.layers}"] if args.layers else []
            model, tok, tokens, seconds, rss_mb, done = side_tuneforge(
                rows, args.steps, work, model_path, [*layers, *(args.override or [])]
            )
        else:
            model, tok, tokens, seconds, rss_mb, done = side_trl(
                rows,
                args.steps,
                work,
                model_path,
                fp32=args.side in ("trl-fp32", "trl-fp32-nogc"),
                checkpointing=args.side != "trl-fp32-nogc",
                budget_s=args.peer_budget_s,
                layers=args.layers,
            )
        loss = held_out_loss(model, tok, held_out)
    res = {
        "side": args.side,
        "dataset": args.dataset,
        "steps_done": done,
        "finished": done >= args.steps,
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_s": tokens / seconds,
        "peak_rss_mb": rss_mb,
        "held_out_loss": loss,
    }
    print("RESULT " + json.dumps(res))


# ----------------------------------------------------------------------------- parent
def gemm_peak(dtype_name: str, n: int = 2048, reps: int = 8) -> float:
    """This machine's GEMM FLOP/s right now (best of `reps` n×n×n products, all threads)."""
    import torch

    dtype = getattr(torch, dtype_name)
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best


def roofline(
    tokens_per_s: float, mean_len: float, label_frac: float, peak: float, dtype: str, adapted: int | None = None
) -> dict:
    """LoRA training FLOPs per token ≈ 4·N_linear + 4·V·d·f + attention (see issue #7), against the
    GEMM peak, measured on this machine at the start of the bench, of the precision tuneforge
    trains in here (bf16 where the CPU has bf16 units, else fp32). With adapters on the last
    `adapted` of L layers only, backward (the input gradients, 2·N per token) runs through those
    layers alone: 2·N·(1 + K/L) for the linears, the attention's backward likewise."""
    n_linear, vocab, d, layers = 106.2e6, 49152, 576, N_LAYERS
    k = adapted or layers
    attn = 2 * layers * mean_len * d * (1 + 2 * k / layers)  # QK^T and AV: fwd 4·T·d/2 (causal), bwd twice that
    flops = 2 * n_linear * (1 + k / layers) + 4 * vocab * d * label_frac + attn
    return {
        "flops_per_token": flops,
        "roofline_tok_s": peak / flops,
        "share": tokens_per_s * flops / peak,
        "formula": "2*N_linear*(1+K/L) + 4*V*d*f + 2*L*T*d*(1+2K/L) (attn, causal; K adapted layers)",
        "inputs": {
            "N_linear": n_linear,
            "V": vocab,
            "d": d,
            "f": round(label_frac, 3),
            "T": round(mean_len, 1),
            "L": layers,
            "K": k,
            f"peak_{dtype}_flops_measured": peak,
        },
    }


def data_stats(rows_file: Path) -> tuple[float, float]:
    from tuneforge.lm.load import load_tokenizer
    from tuneforge.lm.template import tokenize_messages
    from tuneforge.model.sources import resolve

    tok = load_tokenizer(resolve("smollm2-135m-instruct").path)
    enc = [tokenize_messages(tok, json.loads(line)) for line in rows_file.read_text().splitlines()]
    total = sum(len(e["input_ids"]) for e in enc)
    labels = sum(sum(1 for x in e["labels"] if x != -100) for e in enc)
    return total / len(enc), labels / total


PEERS = ("trl", "trl-fp32", "trl-fp32-nogc")


def run_child(cmd: list[str], side: str, ds: str, budget_s: float | None) -> dict:
    """One side in a fresh process. A peer still inside its first step long after its budget
    (the budget is checked between steps; an emulated-bf16 step can take many minutes) is killed
    and recorded as timed out: its throughput is below one step per that many seconds."""
    limit = None if budget_s is None else budget_s + 30
    t0 = time.perf_counter()
    try:
        out = subprocess.run(
            cmd, capture_output=True, text=True, timeout=limit, env={**os.environ, "TQDM_DISABLE": "1"}
        )
    except subprocess.TimeoutExpired:
        return {
            "side": side,
            "dataset": ds,
            "timed_out": True,
            "finished": False,
            "steps_done": 0,
            "seconds": time.perf_counter() - t0,
            "tokens_per_s": None,
            "peak_rss_mb": None,
            "held_out_loss": None,
        }
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.stderr.write(out.stdout[-3000:] + out.stderr[-3000:])
        raise SystemExit(f"{side}/{ds} failed")
    return json.loads(line[7:])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--datasets", default="demo,synthetic")
    ap.add_argument("--sides", default="trl,trl-fp32,tuneforge")
    ap.add_argument(
        "--peer-budget-s",
        type=float,
        default=300.0,
        help="a peer run still going after this many seconds stops and is timed over its steps so far",
    )
    ap.add_argument("--override", action="append", help="tuneforge recipe override for this bench (repeatable)")
    ap.add_argument(
        "--layers",
        type=int,
        help="adapters on the last K layers only, on every side (tuneforge strategy.layers, PEFT layers_to_transform)",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_throughput.json"))
    ap.add_argument("--side", help=argparse.SUPPRESS)
    ap.add_argument("--dataset", help=argparse.SUPPRESS)
    ap.add_argument("--rows", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.side:
        return child(args)
    from tuneforge.model.device import cpu_summary

    machine = cpu_summary()
    print("machine: " + json.dumps(machine), flush=True)
    # the precision tuneforge trains in here; a bf16 GEMM is timed only where the CPU runs it
    # natively (emulated, one 2048³ product takes about a minute and says nothing)
    train_dtype = "bfloat16" if machine["fast_bf16"] else "float32"
    peaks = {dt: gemm_peak(dt) for dt in dict.fromkeys(("float32", train_dtype))}
    print(
        "GEMM peak on this machine: "
        + ", ".join(f"{k} {v / 1e9:.0f} GFLOP/s" for k, v in peaks.items())
        + ("" if machine["fast_bf16"] else " (no bf16 units: bf16 not timed, tuneforge trains in fp32)"),
        flush=True,
    )
    sides = args.sides.split(",")
    results: list[dict] = []
    rows_dir = Path(tempfile.mkdtemp(prefix="bench-rows-"))
    for ds in args.datasets.split(","):
        rows = training_rows(ds, rows_dir / f"{ds}.jsonl")
        for rep in range(args.repeats):
            for side in sides:
                cmd = [
                    sys.executable,
                    __file__,
                    "--side",
                    side,
                    "--dataset",
                    ds,
                    "--steps",
                    str(args.steps),
                    "--rows",
                    str(rows),
                    "--peer-budget-s",
                    str(args.peer_budget_s),
                ]
                for o in args.override or []:
                    cmd += ["--override", o]
                if args.layers:
                    cmd += ["--layers", str(args.layers)]
                res = run_child(cmd, side, ds, args.peer_budget_s if side in PEERS else None)
                res["repeat"] = rep
                results.append(res)
                if res.get("timed_out"):
                    print(
                        f"{ds:10s} rep {rep} {side:10s} did not finish one step in {res['seconds']:.0f} s", flush=True
                    )
                    continue
                note = "" if res["finished"] else f"  (stopped after {res['steps_done']}/{args.steps} steps)"
                print(
                    f"{ds:10s} rep {rep} {side:10s} {res['tokens_per_s']:7.1f} tok/s  rss {res['peak_rss_mb']:6.0f} MB"
                    f"  held-out loss {res['held_out_loss']:.4f}{note}",
                    flush=True,
                )
    summary = {}
    for ds in args.datasets.split(","):
        mean_len, label_frac = data_stats(rows_dir / f"{ds}.jsonl")
        per = {}
        for side in sides:
            rs = [r for r in results if r["dataset"] == ds and r["side"] == side and not r.get("timed_out")]
            if not rs:
                per[side] = {"timed_out": True, "tokens_per_s": 0.0, "finished": False}
                continue
            per[side] = {
                k: statistics.median(r[k] for r in rs) for k in ("tokens_per_s", "peak_rss_mb", "held_out_loss")
            }
            per[side]["finished"] = all(r["finished"] for r in rs)
        peers = [p for p in PEERS if p in per and not per[p].get("timed_out")]
        if peers and "tuneforge" in per:
            best = max(peers, key=lambda p: per[p]["tokens_per_s"])  # the better-configured peer
            t, p = per["tuneforge"], per[best]
            per["ratio"] = {
                "against": best,
                "speed": t["tokens_per_s"] / p["tokens_per_s"],
                "rss": t["peak_rss_mb"] / p["peak_rss_mb"],
                "loss_diff_pct": (
                    100 * (t["held_out_loss"] - p["held_out_loss"]) / p["held_out_loss"] if p["finished"] else None
                ),
            }
        if "tuneforge" in per:
            per["roofline"] = roofline(
                per["tuneforge"]["tokens_per_s"], mean_len, label_frac, peaks[train_dtype], train_dtype, args.layers
            )
        summary[ds] = per
    out = {
        "machine": machine,
        "steps": args.steps,
        "repeats": args.repeats,
        "batch": BATCH,
        "lr": LR,
        "overrides": args.override,
        "adapted_layers": args.layers,
        "peer_budget_s": args.peer_budget_s,
        "gemm_peak_gflop_s": {k: round(v / 1e9, 1) for k, v in peaks.items()},
        "summary": summary,
        "runs": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(out, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
