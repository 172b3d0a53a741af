"""Sampling leaves torch's process-wide RNG alone: a seeded request draws from generators of
its own, so it neither resets nor advances the RNG of other threads (in-server training)."""

from __future__ import annotations

import threading

from .helpers import AUTH, chat_body

CHAT, COMPL = "/v1/chat/completions", "/v1/completions"


def test_a_seeded_request_is_reproducible_and_leaves_the_global_rng_untouched(engine, make_client):
    import torch

    c = make_client(engine)
    body = chat_body("a", temperature=1.5, top_p=0.95, seed=7, max_tokens=12, n=2)
    torch.manual_seed(1234)
    state = torch.random.get_rng_state()
    first = c.post(CHAT, headers=AUTH, json=body).json()["choices"]
    assert torch.equal(torch.random.get_rng_state(), state), "a seeded request changed the global RNG"
    again = c.post(CHAT, headers=AUTH, json=body).json()["choices"]
    assert again == first
    texts = [ch["message"]["content"] for ch in first]
    assert texts[0] != texts[1], "each choice samples on its own generator"
    other = c.post(CHAT, headers=AUTH, json={**body, "seed": 8}).json()["choices"]
    assert [ch["message"]["content"] for ch in other] != texts
    # unseeded sampling draws from a random generator: also not from the global one
    unseeded = c.post(COMPL, headers=AUTH, json={"model": "b", "prompt": "hi", "temperature": 1.0, "max_tokens": 8})
    assert unseeded.status_code == 200
    assert torch.equal(torch.random.get_rng_state(), state)


def test_a_training_thread_draws_the_same_numbers_while_seeded_requests_run(engine, make_client):
    import torch

    def draws(halfway: threading.Event, resume: threading.Event) -> list[float]:
        torch.manual_seed(99)  # what a training loop seeded once would draw
        out = []
        for _ in range(50):
            out.append(torch.rand(1).item())
            if len(out) == 25:  # mid-"training", the server answers seeded requests
                halfway.set()
                assert resume.wait(60)
        return out

    go = threading.Event()
    go.set()
    alone = draws(threading.Event(), go)

    halfway, resume, got = threading.Event(), threading.Event(), []
    t = threading.Thread(target=lambda: got.extend(draws(halfway, resume)))
    t.start()
    try:
        assert halfway.wait(60)
        c = make_client(engine)
        for seed in (1, 2, 3):
            body = chat_body("a", temperature=1.0, seed=seed, max_tokens=6)
            assert c.post(CHAT, headers=AUTH, json=body).status_code == 200
    finally:
        resume.set()
        t.join(60)
    assert got == alone
