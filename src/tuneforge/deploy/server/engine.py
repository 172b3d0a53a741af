"""One base model, many LoRA adapters, one generation worker that batches across them.

Requests (jobs) wait in a bounded queue. A single worker thread takes the oldest job,
gathers more jobs with the same sampling settings for up to `batch_window_ms`, and runs
them as one `generate` call in which every row names its own adapter (PEFT's mixed-
adapter batches, `adapter_names=[...]`, "__base__" for the base model).

Generation is observed token by token through a stopping criterion, which is where
text is decoded and streamed out, stop sequences are matched, each row's own
`max_tokens` is enforced and cancelled rows (client gone) are ended. A batch ends as
soon as all its rows are done, so a cancelled request stops costing compute.

Jobs talk back through `Job.emit(Event)`, called on the worker thread; the server
turns that into asyncio queue puts.

Sampling never touches torch's process-wide RNG (in-server training shares it): every
row draws from its own `torch.Generator`, seeded from the request's `seed` or at random.
"""

from __future__ import annotations

import collections
import itertools
import json
import re
import threading
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from ...errors import TuneforgeError
from ...lm.load import ADAPTER_SAFE_WEIGHTS, check_weights

BASE_ADAPTER = "__base__"  # PEFT's name for "no adapter" in a mixed batch
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:/-]{0,127}$")
_ids = itertools.count(1)


class QueueFull(RuntimeError):
    pass


class UnknownModel(KeyError):
    pass


class AdapterError(TuneforgeError, ValueError):
    pass


@dataclass(frozen=True)
class EngineConfig:
    max_queue: int = 64  # jobs waiting for the worker; one more gets QueueFull (HTTP 429)
    max_batch_size: int = 8  # sequences per generate call
    batch_window_ms: float = 10.0  # how long the worker waits for more jobs to join a batch


@dataclass
class ModelEntry:
    """A servable model name: the base, or one adapter on it."""

    name: str
    internal: str  # PEFT adapter name (public names may hold characters PEFT forbids)
    path: str
    chat_template: str
    stop_ids: frozenset
    system_prompt: Optional[str] = None
    created: int = field(default_factory=lambda: int(time.time()))
    removed: bool = False
    pins: int = 0  # requests preparing a job for this version (`Engine.pin`); it stays loaded meanwhile

    @property
    def is_base(self) -> bool:
        return self.internal == BASE_ADAPTER


@dataclass
class Event:
    kind: str  # start | delta | finish | end | error
    index: int = 0  # choice index
    text: str = ""
    finish: Optional[str] = None
    tokens: int = 0  # completion tokens of the row (finish events)


@dataclass
class Row:
    job: Job
    index: int
    prompt_ids: list
    tokens: list = field(default_factory=list)
    sent: int = 0  # characters of the decoded text already emitted
    done: bool = False
    finish: Optional[str] = None


class Job:
    """One request: `n` choices for each prompt, on one model, with one sampling setting."""

    def __init__(
        self,
        entry: ModelEntry,
        prompts: list[list[int]],
        max_tokens: int,
        emit: Callable[[Event], None],
        n: int = 1,
        stops: Optional[list[str]] = None,
        temperature: Optional[float] = None,
        top_p: Optional[float] = None,
        seed: Optional[int] = None,
    ):
        self.id = next(_ids)
        self.entry, self.max_tokens, self.emit, self.stops = entry, max_tokens, emit, list(stops or [])
        self.stop_tables = [prefix_table(s) for s in self.stops]  # once per request, not per token
        self.longest_stop = max(map(len, self.stops), default=0)
        self.temperature, self.top_p, self.seed = temperature or 0.0, top_p, seed
        self.rows = [Row(self, i * n + k, list(p)) for i, p in enumerate(prompts) for k in range(n)]
        self.cancelled = False
        self.submitted_at = time.monotonic()
        self.started_at: Optional[float] = None
        self.batch_rows = 0  # size of the batch it ran in (tests and metrics read it)

    def cancel(self) -> None:
        """Ask the worker to stop this job at its next token (or skip it if still queued)."""
        self.cancelled = True

    def sampling_key(self) -> tuple:
        """Jobs batch together only when they sample identically; a seeded job runs alone,
        so its tokens do not depend on which other requests happened to share its batch."""
        if not self.temperature:
            return ("greedy",)
        return ("sample", self.temperature, self.top_p, self.id if self.seed is not None else None)


def adapter_folder(path: str | Path) -> Path:
    """A PEFT adapter folder, or a tuneforge run directory's `adapter/`."""
    p = Path(path).expanduser()
    if (p / "recipe.yaml").is_file() and (p / "adapter").is_dir():
        p = p / "adapter"
    if not (p / "adapter_config.json").is_file():
        hint = " (a fully fine-tuned run: serve it as the base model instead)" if (p / "model").is_dir() else ""
        raise AdapterError(f"{path}: no adapter_config.json — not a PEFT adapter folder or a run with an adapter{hint}")
    return p


def run_system_prompt(path: str | Path) -> Optional[str]:
    """The recipe's `data.system_prompt` when `path` is (inside) a run, else None."""
    p = Path(path).expanduser()
    for run in (p, p.parent):
        if (run / "recipe.yaml").is_file():
            from ...run import RunDir

            return RunDir(run).recipe().data.system_prompt
    return None


def prefix_table(s: str) -> list[int]:
    """KMP failure function: entry i is the longest proper prefix of s[: i + 1] that is also its suffix.

    >>> prefix_table("abab")
    [0, 0, 1, 2]
    """
    table, k = [0] * len(s), 0
    for i in range(1, len(s)):
        while k and s[i] != s[k]:
            k = table[k - 1]
        if s[i] == s[k]:
            k += 1
        table[i] = k
    return table


def held_back(text: str, stops: list[str], tables: Optional[list[list[int]]] = None) -> int:
    """Characters at the end of `text` that could still become a stop sequence.

    Runs the KMP automaton of each stop over the last len(stop) - 1 characters only, so a
    decoding step costs O(total stop length), whatever the length of the text (the naive
    `endswith` of every prefix was quadratic in the stop length, every token, under the model lock).

    >>> held_back("Hello ##", ["###"])
    2
    """
    best = 0
    for s, table in zip(stops, tables or [prefix_table(s) for s in stops]):
        tail = text[max(0, len(text) - len(s) + 1) :]
        first = tail.find(s[0]) if s else -1  # a match starts with s[0]: mostly none, found in C
        if first < 0:
            continue
        k = 0  # the tail is shorter than s, so k never reaches len(s)
        for ch in tail[first:]:
            while k and s[k] != ch:
                k = table[k - 1]
            if s[k] == ch:
                k += 1
        best = max(best, k)
    return best


class Engine:
    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        base_name: str,
        base_path: str,
        config: EngineConfig = EngineConfig(),
        step_hook: Optional[Callable[[list], None]] = None,
    ):
        from ...lm.generate import stop_token_ids

        self.model, self.tokenizer, self.config = model, tokenizer, config
        self.step_hook = step_hook  # called each decoding step with the batch's jobs (tests use it to pause)
        # called with a gathered batch's jobs before it takes the model lock (tests interleave a swap there)
        self.batch_hook: Optional[Callable[[list], None]] = None
        self.context_length = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        base = ModelEntry(
            base_name,
            BASE_ADAPTER,
            base_path,
            tokenizer.chat_template,
            frozenset(stop_token_ids(tokenizer, model)),
            run_system_prompt(base_path),
        )
        self._entries: dict[str, ModelEntry] = {base_name: base}
        self.base_name = base_name
        self._queue: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._model_lock = threading.RLock()  # generation and adapter (un)loading never overlap
        self._running = threading.Event()
        self._running.set()
        self._stopping = False
        self._worker: Optional[threading.Thread] = None
        self._adapter_ids = itertools.count()
        self._retired: list[ModelEntry] = []  # replaced adapter versions that queued jobs may still use
        self._inflight: list[Job] = []  # the batch the worker gathered (out of the queue, not yet done)
        self.on_batch: Optional[Callable[[int, int, float], None]] = None  # (rows, new tokens, seconds)

    # loading ------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        base_path: str,
        base_name: str,
        adapters: Optional[dict[str, str]] = None,
        config: EngineConfig = EngineConfig(),
        dtype: str = "float32",
        trust_remote_code: bool = False,
    ) -> Engine:
        from ...lm.load import load_model, load_tokenizer

        tokenizer = load_tokenizer(base_path, trust_remote_code)
        model = load_model(base_path, dtype, trust_remote_code)
        model.eval()
        engine = cls(model, tokenizer, base_name, base_path, config)
        for name, path in (adapters or {}).items():
            engine.add_adapter(name, path)
        return engine

    @property
    def is_peft(self) -> bool:
        return hasattr(self.model, "peft_config")

    def models(self) -> list[ModelEntry]:
        return list(self._entries.values())

    def adapters(self) -> list[ModelEntry]:
        return [e for e in self._entries.values() if not e.is_base]

    def get(self, name: str) -> ModelEntry:
        try:
            return self._entries[name]
        except KeyError:
            raise UnknownModel(name) from None

    def pin(self, name: str) -> ModelEntry:
        """The entry served as `name`, kept loaded until `unpin`, for a request that templates
        and tokenises before it submits: a swap meanwhile retires that version but does not
        unload it, so the job still runs on the version its prompt was rendered for."""
        with self._cond:  # the lock the swap takes: looked up and pinned in one step
            entry = self.get(name)
            entry.pins += 1
        return entry

    def unpin(self, entry: ModelEntry) -> None:
        with self._cond:
            entry.pins -= 1

    def add_adapter(self, name: str, path: str | Path) -> ModelEntry:
        """Load a LoRA adapter (folder or run directory) under `name`; safe while serving."""
        if not NAME_RE.match(name) or name == BASE_ADAPTER:
            raise AdapterError(f"adapter name {name!r}: use letters, digits and . _ : / - (at most 128)")
        if name in self._entries:
            raise AdapterError(f"a model named {name!r} is already being served")
        folder = adapter_folder(path)
        cfg = json.loads((folder / "adapter_config.json").read_text())
        if cfg.get("peft_type") != "LORA":
            raise AdapterError(
                f"{path}: a {cfg.get('peft_type')} adapter; only LoRA adapters can share a base "
                f"model in mixed batches — merge it (`tuneforge export`) and serve that instead"
            )
        template, stops = self._adapter_template(folder)
        internal = f"tf_adapter_{next(self._adapter_ids)}"
        check_weights(folder, ADAPTER_SAFE_WEIGHTS, required=True)  # never unpickle an adapter_model.bin
        with self._model_lock:
            from peft import PeftModel

            if self.is_peft:
                self.model.load_adapter(str(folder), adapter_name=internal)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=internal)
            self.model.eval()
            entry = ModelEntry(name, internal, str(folder), template, stops, run_system_prompt(folder))
            self._entries[name] = entry
        return entry

    def replace_adapter(self, name: str, path: str | Path) -> ModelEntry:
        """Serve `path` under an existing adapter name, with no moment where the name is missing
        (the registry follower swaps versions this way). Requests already queued for the old
        version still run on it; it is unloaded at the next swap once nothing refers to it."""
        old = self.get(name)
        if old.is_base:
            raise AdapterError("the base model cannot be replaced")
        staged = self.add_adapter(f"{name}:staged", path)  # loads the weights before the swap
        # model lock first (waits for a running batch), queue lock second: submit() never waits on a batch
        with self._model_lock, self._cond:
            del self._entries[staged.name]
            staged.name = name
            self._entries[name] = staged
            self._retired.append(old)
            self._unload_retired()
        return staged

    def _unload_retired(self) -> None:
        """Unload replaced versions that nothing uses any more; holds the model and queue locks.

        In use means: pinned by a request that is preparing its job, waiting in the queue, or
        gathered into the worker's batch — a batch is gathered under the queue lock and run
        under the model lock, so a swap can fall in between; the batch keeps its version."""
        used = {id(j.entry) for j in (*self._queue, *self._inflight)}
        for e in [e for e in self._retired if not e.pins and id(e) not in used]:
            self._retired.remove(e)
            e.removed = True
            with warnings.catch_warnings():  # "adapter was active": mixed batches name theirs per row
                warnings.simplefilter("ignore")
                self.model.delete_adapter(e.internal)

    def remove_adapter(self, name: str) -> None:
        entry = self.get(name)
        if entry.is_base:
            raise AdapterError("the base model cannot be unloaded")
        with self._model_lock:
            entry.removed = True
            del self._entries[name]
            self.model.delete_adapter(entry.internal)

    def _adapter_template(self, folder: Path) -> tuple[str, frozenset]:
        """The adapter's own chat template and stop tokens when it ships a tokenizer (tuneforge
        runs do), so a request renders exactly as in training; else the base model's."""
        base = self._entries[self.base_name]
        if not (folder / "tokenizer_config.json").is_file():
            return base.chat_template, base.stop_ids
        from ...lm.generate import stop_token_ids
        from ...lm.load import load_tokenizer

        tok = load_tokenizer(str(folder))
        if len(tok) != len(self.tokenizer):
            raise AdapterError(
                f"{folder}: its tokenizer has {len(tok)} tokens, the base model's {len(self.tokenizer)}"
                f" — adapters with added tokens cannot share the base model"
            )
        return tok.chat_template, frozenset(stop_token_ids(tok, self.model))

    # prompts ------------------------------------------------------------------------
    def chat_prompt(self, entry: ModelEntry, messages: list[dict]) -> list[int]:
        """Token ids of a conversation, rendered with the model's training chat template."""
        from ...data.prepare import maybe_add_system

        msgs = [
            {"role": "system" if m["role"] == "developer" else m["role"], "content": m["content"]} for m in messages
        ]
        msgs = maybe_add_system({"messages": msgs}, entry.system_prompt)["messages"]
        text = self.tokenizer.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=True, chat_template=entry.chat_template
        )
        # the template already holds its special tokens (as in training: data/template.py)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def text_prompt(self, text: str) -> list[int]:
        return self.tokenizer(text)["input_ids"]

    # queue --------------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return len(self._queue)

    def has_room(self) -> bool:
        """Whether a job submitted now would be queued; the server checks it before tokenising,
        so a 429 costs no tokenizer time (`submit` still decides, under the queue lock)."""
        return len(self._queue) < self.config.max_queue

    def submit(self, job: Job) -> None:
        with self._cond:
            if len(self._queue) >= self.config.max_queue:
                raise QueueFull(f"{len(self._queue)} requests are waiting")
            self._queue.append(job)
            self._cond.notify_all()
        self.start()

    def pause(self) -> None:
        """Stop taking new jobs (the running batch finishes); for draining, and for tests."""
        self._running.clear()

    def resume(self) -> None:
        self._running.set()
        with self._cond:
            self._cond.notify_all()

    def start(self) -> None:
        if self._worker is None or not self._worker.is_alive():
            self._stopping = False
            self._worker = threading.Thread(target=self._loop, name="tuneforge-engine", daemon=True)
            self._worker.start()

    def close(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
            pending = list(self._queue)
            self._queue.clear()
        for job in pending:
            _send(job, Event("error", text="the server is shutting down"))
        if self._worker is not None:
            self._worker.join(timeout=30)

    # worker -------------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            jobs = self._next_batch()
            if jobs is None:
                return
            if jobs:
                self._run_batch(jobs)
            with self._cond:
                self._inflight = []
            if self._retired:  # versions swapped out while this batch ran on them
                with self._model_lock, self._cond:
                    self._unload_retired()

    def _next_batch(self) -> Optional[list[Job]]:
        with self._cond:
            while not self._stopping and (not self._queue or not self._running.is_set()):
                self._cond.wait(0.5)  # also re-checks pause/resume
            if self._stopping:
                return None
            first = self._queue.popleft()
            jobs, rows = [first], len(first.rows)
            deadline = time.monotonic() + self.config.batch_window_ms / 1000
            while True:
                rows += self._take_matching(first.sampling_key(), jobs, rows)
                left = deadline - time.monotonic()
                if rows >= self.config.max_batch_size or left <= 0:
                    break
                self._cond.wait(left)
            self._inflight = jobs  # still under the queue lock: a swap sees every job, queued or gathered
        live = [j for j in jobs if not j.cancelled]
        for j in jobs:
            if j.cancelled:  # the client left while queued: never start it
                _finish_rows(j, "cancelled")
        return live

    def _take_matching(self, key: tuple, jobs: list[Job], rows: int) -> int:
        """Move queued jobs with the same sampling key into `jobs` while they fit; rows added."""
        added = 0
        for job in list(self._queue):
            if job.sampling_key() == key and rows + added + len(job.rows) <= self.config.max_batch_size:
                self._queue.remove(job)
                jobs.append(job)
                added += len(job.rows)
        return added

    def _run_batch(self, jobs: list[Job]) -> None:
        import torch

        rows = [r for j in jobs for r in j.rows]
        now = time.monotonic()
        for j in jobs:
            j.started_at, j.batch_rows = now, len(rows)
            _send(j, Event("start"))
        if self.batch_hook is not None:
            self.batch_hook(jobs)
        try:
            with self._model_lock:
                gone = [j for j in jobs if j.entry.removed]
                for j in gone:
                    _send(j, Event("error", text=f"model {j.entry.name!r} was unloaded"))
                    for r in j.rows:
                        r.done = True
                rows = [r for r in rows if not r.done]
                if rows:
                    self._generate(rows, jobs[0], torch)
        except Exception as exc:  # one bad batch must not kill the worker
            for j in jobs:
                if not all(r.done for r in j.rows):
                    for r in j.rows:
                        r.done = True
                    _send(j, Event("error", text=f"generation failed: {type(exc).__name__}: {exc}"))
        for j in jobs:  # rows generate() ended without a decision (it hit its own length limit)
            for r in j.rows:
                if not r.done:
                    self._finish(r, "length")

    def _generate(self, rows: list[Row], lead: Job, torch: Any) -> None:
        pad = self.tokenizer.pad_token_id
        width = max(len(r.prompt_ids) for r in rows)
        # left padding: every row's next token sits at the same position
        ids = torch.tensor([[pad] * (width - len(r.prompt_ids)) + r.prompt_ids for r in rows])
        mask = torch.tensor([[0] * (width - len(r.prompt_ids)) + [1] * len(r.prompt_ids) for r in rows])
        # greedy decoding; a sampled batch picks its tokens in _Sampler (own generators), which
        # generate() then takes as the argmax: its own sampling would draw from the global RNG
        kwargs: dict[str, Any] = {"do_sample": False}
        if lead.temperature:
            kwargs["logits_processor"] = [_Sampler(rows, lead.temperature, lead.top_p)]
        if self.is_peft:
            kwargs["adapter_names"] = [r.job.entry.internal for r in rows]
        stops = sorted(set().union(*(r.job.entry.stop_ids for r in rows)))
        t0 = time.monotonic()
        with torch.inference_mode():
            self.model.generate(
                input_ids=ids.to(self.model.device),
                attention_mask=mask.to(self.model.device),
                max_new_tokens=max(r.job.max_tokens for r in rows),
                pad_token_id=pad,
                eos_token_id=stops,
                stopping_criteria=[_Observer(self, rows)],
                **kwargs,
            )
        if self.on_batch is not None:
            self.on_batch(len(rows), sum(len(r.tokens) for r in rows), time.monotonic() - t0)

    # one decoding step of one row -----------------------------------------------------
    def _advance(self, row: Row, token: int) -> None:
        job = row.job
        row.tokens.append(token)
        if token in job.entry.stop_ids:
            self._flush(row, self._decode(row))
            return self._finish(row, "stop")
        text = self._decode(row)
        # what was sent holds no stop, and no stop prefix at its end: search only from there
        # (less the longest stop: decoding may still rewrite the last characters)
        start = max(0, row.sent - job.longest_stop)
        hits = [i for i in (text.find(s, start) for s in job.stops) if i >= 0]
        if hits:
            self._flush(row, text[: min(hits)])
            return self._finish(row, "stop")
        if len(row.tokens) >= job.max_tokens:
            self._flush(row, text)
            return self._finish(row, "length")
        # hold back a possible stop-sequence prefix and a half-decoded UTF-8 character
        safe = len(text) - held_back(text, job.stops, job.stop_tables)
        while safe and text[safe - 1] == "\ufffd":
            safe -= 1
        self._flush(row, text[:safe])

    def _decode(self, row: Row) -> str:
        ids = row.tokens[:-1] if row.tokens and row.tokens[-1] in row.job.entry.stop_ids else row.tokens
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def _flush(self, row: Row, text: str) -> None:
        if len(text) > row.sent:
            _send(row.job, Event("delta", row.index, text[row.sent :]))
            row.sent = len(text)

    def _finish(self, row: Row, reason: str) -> None:
        row.done, row.finish = True, reason
        _send(row.job, Event("finish", row.index, finish=reason, tokens=len(row.tokens)))
        if all(r.done for r in row.job.rows):
            _send(row.job, Event("end"))


class _Observer:
    """A stopping criterion that sees every new token: decodes, streams, stops rows."""

    def __init__(self, engine: Engine, rows: list[Row]):
        self.engine, self.rows = engine, rows
        self.jobs = list({id(r.job): r.job for r in rows}.values())

    def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
        import torch

        if self.engine.step_hook is not None:
            self.engine.step_hook(self.jobs)
        new = input_ids[:, -1].tolist()
        for row, token in zip(self.rows, new):
            if row.done:
                continue
            if row.job.cancelled:
                self.engine._finish(row, "cancelled")
            else:
                self.engine._advance(row, token)
        return torch.tensor([r.done for r in self.rows], dtype=torch.bool, device=input_ids.device)


class _Sampler:
    """A logits processor that samples each row's next token with the row's own generator and
    returns a one-hot choice for greedy decoding to take.

    Temperature and top-p are transformers' own warpers (top-k stays off: OpenAI has none).
    A seeded request's rows are seeded from (seed, choice index), so the same request gives
    the same tokens; an unseeded row is seeded at random. `torch.manual_seed` would reset the
    RNG of every thread in the process (a training run in the same server) and lets
    concurrent requests draw from one stream.
    """

    def __init__(self, rows: list[Row], temperature: float, top_p: Optional[float]):
        from transformers import TemperatureLogitsWarper, TopPLogitsWarper

        self.rows, self.generators = rows, None
        self.warpers = [TemperatureLogitsWarper(temperature)]
        if top_p is not None and top_p < 1.0:
            self.warpers.append(TopPLogitsWarper(top_p))

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        if self.generators is None:  # on the device of the logits, which multinomial requires
            self.generators = [row_generator(r.job.seed, r.index, scores.device) for r in self.rows]
        for warp in self.warpers:
            scores = warp(input_ids, scores)
        probs = torch.softmax(scores.float(), dim=-1)
        picks = torch.cat([torch.multinomial(p, 1, generator=g) for p, g in zip(probs, self.generators)])
        chosen = torch.full_like(scores, float("-inf"))
        return chosen.scatter_(1, picks[:, None], 0.0)


def row_generator(seed: Optional[int], index: int, device: Any = "cpu") -> Any:
    """A generator of its own for one choice of a request: from (seed, index), or random.

    >>> a, b = row_generator(7, 0), row_generator(7, 0)
    >>> bool((a.initial_seed() == b.initial_seed()) and a.initial_seed() != row_generator(7, 1).initial_seed())
    True
    """
    import torch

    gen = torch.Generator(device=device)
    if seed is None:
        gen.seed()  # from the OS, not from the global generator
    else:
        gen.manual_seed((seed * 0x9E3779B97F4A7C15 + index) % (1 << 63))
    return gen


def _finish_rows(job: Job, reason: str) -> None:
    for r in job.rows:
        r.done, r.finish = True, reason
        _send(job, Event("finish", r.index, finish=reason, tokens=len(r.tokens)))
    _send(job, Event("end"))


def _send(job: Job, event: Event) -> None:
    """Deliver an event; a receiver that is gone (closed event loop) cancels the job."""
    try:
        job.emit(event)
    except Exception:
        job.cancel()
