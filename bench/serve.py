"""Serving throughput: 8 concurrent clients over 4 adapters vs the same requests one at a time.

    .venv/bin/python bench/serve.py [--requests 32] [--clients 8] [--max-tokens 32] [--base smollm2-135m-instruct]

A live `tuneforge serve` app (uvicorn on loopback) holds one base model and 4 LoRA
adapters (random, seeded, non-zero so each changes the output). The same chat requests,
spread round-robin over the adapters, are sent once sequentially and once from N
concurrent clients; the server batches concurrent requests for different adapters into
one PEFT mixed-adapter batch. Reported: completion tokens/s of both and their ratio.
"""

from __future__ import annotations

import argparse
import json
import queue
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KEY = "bench-key"


def make_adapters(base_path: str, out: Path, n: int = 4) -> dict[str, str]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    paths = {}
    for i in range(n):
        torch.manual_seed(i)
        model = AutoModelForCausalLM.from_pretrained(base_path)
        peft = get_peft_model(
            model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear", task_type="CAUSAL_LM")
        )
        with torch.no_grad():
            for name, p in peft.named_parameters():
                if "lora_B" in name:
                    p.normal_(0, 0.002)  # small but non-zero: each adapter really changes the answers
        paths[f"adapter{i}"] = str(out / f"adapter{i}")
        peft.save_pretrained(paths[f"adapter{i}"])
    return paths


def live(app):
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    return server, thread, f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"


def send(client, url: str, body: dict) -> int:
    r = client.post(f"{url}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {KEY}"}, timeout=600)
    r.raise_for_status()
    return r.json()["usage"]["completion_tokens"]


def run_requests(url: str, bodies: list[dict], clients: int) -> tuple[int, float]:
    import httpx

    work: queue.Queue = queue.Queue()
    for b in bodies:
        work.put(b)
    tokens = [0] * clients

    def worker(i: int) -> None:
        with httpx.Client() as c:
            while True:
                try:
                    b = work.get_nowait()
                except queue.Empty:
                    return
                tokens[i] += send(c, url, b)

    t0 = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(tokens), time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--base", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "serve.json"))
    args = ap.parse_args()

    from tuneforge.deploy.server.app import ServerSettings, create_app
    from tuneforge.deploy.server.engine import Engine, EngineConfig
    from tuneforge.model.sources import resolve

    base = resolve(args.base).path
    questions = [
        json.loads(l)["messages"][0]["content"] for l in (ROOT / "examples/demo/test.jsonl").read_text().splitlines()
    ]
    with tempfile.TemporaryDirectory() as tmp:
        adapters = make_adapters(base, Path(tmp))
        engine = Engine.load(base, "base", adapters, EngineConfig(max_queue=256, max_batch_size=args.clients))
        app = create_app(engine, ServerSettings(api_keys=(KEY,)), close_engine=True)
        server, thread, url = live(app)
        try:
            names = list(adapters)
            bodies = [
                {
                    "model": names[i % len(names)],
                    "max_tokens": args.max_tokens,
                    "temperature": 0,
                    "messages": [{"role": "user", "content": questions[i % len(questions)]}],
                }
                for i in range(args.requests)
            ]
            run_requests(url, bodies[:2], 1)  # warm-up
            seq_tokens, seq_s = run_requests(url, bodies, 1)
            con_tokens, con_s = run_requests(url, bodies, args.clients)
        finally:
            server.should_exit = True
            thread.join(timeout=10)
    res = {
        "base": args.base,
        "adapters": len(adapters),
        "requests": args.requests,
        "clients": args.clients,
        "max_tokens": args.max_tokens,
        "sequential": {"tokens": seq_tokens, "seconds": round(seq_s, 2), "tokens_per_s": round(seq_tokens / seq_s, 1)},
        "concurrent": {"tokens": con_tokens, "seconds": round(con_s, 2), "tokens_per_s": round(con_tokens / con_s, 1)},
    }
    res["ratio"] = round(res["concurrent"]["tokens_per_s"] / res["sequential"]["tokens_per_s"], 2)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
