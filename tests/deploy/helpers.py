"""Helpers for the server tests: adapters, engines, a live uvicorn, SSE parsing."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

KEY = "test-key"
AUTH = {"Authorization": f"Bearer {KEY}"}


def make_adapter(model_dir: Path, out: Path, seed: int) -> Path:
    """A LoRA adapter with non-zero B (random init), so it really changes the outputs."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(model_dir)
    cfg = LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(base, cfg).save_pretrained(out)
    return out


def load_engine(model_dir, adapters=None, **config):
    from tuneforge.deploy.server.engine import Engine, EngineConfig

    return Engine.load(str(model_dir), "tiny", {k: str(v) for k, v in (adapters or {}).items()}, EngineConfig(**config))


def wait_until(cond, what: str, timeout: float = 20.0) -> None:
    """Poll for a state the test set up (never asserts on timing itself)."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.005)


@contextlib.contextmanager
def live_server(app):
    """The app under a real uvicorn on a free loopback port (for the openai client, disconnects)."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, "uvicorn to start")
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def chat_body(model: str = "tiny", content: str = "hello there", **kw) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 8, **kw}


def sse_events(text: str) -> list:
    """Parse `data: ...` lines of a server-sent-events body; '[DONE]' kept as a string."""
    import json

    out = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :]
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out
