"""Stage 7: watch the served model and feed what it learns back into training.

    stats.py          latency, throughput, errors, tokens per adapter and time window (request log)
    drift.py          recent prompts vs training prompts: MMD test, length and topic shift
    embed.py          sentence embedders for drift (offline all-MiniLM-L6-v2, or hashing)
    check.py          everything above against monitor.yaml thresholds (`tuneforge monitor check`)
    report.py         the HTML report (`tuneforge monitor report`)
    feedback_data.py  POST /v1/feedback rows -> SFT and preference data (`tuneforge data from-feedback`)

The model registry that versions runs lives in `tuneforge/registry.py` (it is shared by
the pipeline, the server and this stage).
"""
