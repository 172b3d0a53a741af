"""OpenAI-compatible multi-adapter server (`tuneforge serve`).

    engine.py      base model + LoRA adapter registry + batching worker (one thread)
    app.py         FastAPI app factory: routes, auth, limits, streaming
    schemas.py     request/response bodies in OpenAI's shapes
    limits.py      request limits, body-size middleware, OpenAI error shape
    metrics.py     Prometheus text exposition
    requestlog.py  SQLite request log (the schema stage 7 monitoring reads)

Nothing heavy is imported here: `create_app` / `Engine` import torch, peft and
FastAPI only when called.
"""
