"""`tuneforge serve`: work out the base model and adapters, build the engine, run uvicorn.

tuneforge serve runs/demo                          base from the run's recipe, adapter "demo"
tuneforge serve smollm2-135m-instruct -a a=runs/a -a b=path/to/peft-adapter
tuneforge serve -a runs/a -a runs/b                base from the first adapter's run/config
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Optional

from .app import ServerSettings
from .engine import NAME_RE, AdapterError, EngineConfig, adapter_folder


@dataclass
class ServePlan:
    base_path: str
    base_name: str
    dtype: str = "float32"
    # decided by lm.load.decide_remote_code from the base folder and the operator's opt-in,
    # never read from a served run's recipe.yaml
    trust_remote_code: bool = False
    adapters: dict = field(default_factory=dict)  # public name -> adapter folder or run directory
    followed: list = field(default_factory=list)  # registry aliases to follow (follow.Followed)
    registry: Optional[str] = None  # the registry they are read from


def _is_run(p: Path) -> bool:
    return (p / "recipe.yaml").is_file() and (p / "manifest.json").is_file()


def parse_adapter(spec: str) -> tuple[str, str]:
    """`name=path` or just `path` (named after the run / folder).

    >>> parse_adapter("support=runs/support-v2")
    ('support', 'runs/support-v2')
    """
    name, sep, path = spec.partition("=")
    if not sep and spec.startswith("registry:"):  # registry:NAME@ALIAS is served as NAME
        name, path = spec[len("registry:") :].partition("@")[0], spec
    elif not sep:
        p = Path(spec).expanduser().resolve()
        name, path = (p.parent.name if p.name == "adapter" and _is_run(p.parent) else p.name), spec
    if not NAME_RE.match(name):
        raise AdapterError(f"--adapter {spec!r}: the name {name!r} must be letters, digits and . _ : / -")
    return name, path


def _base_of_adapter(path: str) -> tuple[str, Optional[str], str]:
    """(model.base id, cache dir, dtype) that an adapter was trained on. Not its recipe's
    trust_remote_code: whoever runs `serve` decides what code runs (`_checked`)."""
    p = Path(path).expanduser()
    run = p if _is_run(p) else p.parent if _is_run(p.parent) else None
    if run is not None:
        from ...run import RunDir

        m = RunDir(run).recipe().model
        return m.base, m.cache_dir, m.dtype
    cfg = json.loads((adapter_folder(p) / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise AdapterError(f"{path}: adapter_config.json names no base model — give the base as the first argument")
    return base, None, "float32"


def _display_name(base: str) -> str:
    p = Path(base)
    return p.stem if p.suffix == ".gguf" else p.name if ("/" in base or p.exists()) and p.name else base


def plan(
    target: Optional[str],
    adapter_specs: list[str],
    registry: Optional[str] = None,
    trust_remote_code: Optional[bool] = None,
) -> ServePlan:
    """Resolve what to serve; every path is checked before any weights are loaded: custom code
    (`auto_map`) needs `trust_remote_code=True` (the operator's --trust-remote-code; None: the
    environment, TUNEFORGE_TRUST_REMOTE_CODE), and pickle-only weights are refused."""
    from ...model.sources import resolve
    from .follow import is_registry_spec, parse_spec, resolve_spec

    adapters = dict(parse_adapter(s) for s in adapter_specs)
    if len(adapters) != len(adapter_specs):
        raise AdapterError("two --adapter options use the same name")
    followed = [parse_spec(n, p) for n, p in adapters.items() if is_registry_spec(p)]
    if followed:
        from ...registry import default_path

        registry = str(registry or default_path())
        for f in followed:  # serve what the alias points at now; the follower tracks later changes
            adapters[f.public] = resolve_spec(f, registry)
    p = _checked(_plan(target, adapters, resolve), trust_remote_code)
    p.followed, p.registry = followed, registry
    return p


def _checked(p: ServePlan, opt_in: Optional[bool]) -> ServePlan:
    """The plan with its remote-code decision; every folder it loads is checked first."""
    from ...lm.load import ADAPTER_SAFE_WEIGHTS, check_weights, decide_remote_code

    for path in p.adapters.values():
        folder = adapter_folder(path)
        check_weights(folder, ADAPTER_SAFE_WEIGHTS, required=True)
        decide_remote_code(folder, opt_in)  # the adapter's own tokenizer is loaded too
    check_weights(p.base_path)
    return replace(p, trust_remote_code=decide_remote_code(p.base_path, opt_in))


def _plan(target: Optional[str], adapters: dict, resolve: Callable) -> ServePlan:
    for path in adapters.values():
        adapter_folder(path)  # fail fast, with the path in the message
    if target is None:
        if not adapters:
            raise AdapterError("nothing to serve: give a run directory or base model, and/or --adapter name=path")
        base, cache, dtype = _base_of_adapter(next(iter(adapters.values())))
        src = resolve(base, cache)
        return ServePlan(src.path, _display_name(base), dtype, adapters=adapters)
    t = Path(target).expanduser()
    if _is_run(t):
        from ...run import RunDir

        run = RunDir(t)
        m = run.recipe().model
        if run.adapter_dir.is_dir():
            src = resolve(m.base, m.cache_dir)
            name = parse_adapter(str(t))[0]
            if name in adapters:
                raise AdapterError(f"--adapter {name!r} clashes with the run's own adapter name")
            return ServePlan(src.path, _display_name(m.base), m.dtype, adapters={name: str(t), **adapters})
        if not run.model_dir.is_dir():
            raise FileNotFoundError(f"{t}: no trained model (adapter/ or model/) — run `tuneforge train {t}` first")
        return ServePlan(str(run.model_dir), t.resolve().name, m.dtype, adapters=adapters)
    src = resolve(target)
    return ServePlan(src.path, _display_name(target), adapters=adapters)


def api_keys(given: Optional[list[str]], log: Callable[[str], None]) -> tuple[tuple[str, ...], bool]:
    """Keys from --api-key, else TUNEFORGE_API_KEYS (comma-separated), else a fresh random key.

    Returns (keys, generated). A server without keys is never started: a forgotten flag
    must not expose the model to the network.
    """
    keys = [k.strip() for k in (given or os.environ.get("TUNEFORGE_API_KEYS", "").split(",")) if k.strip()]
    if keys:
        return tuple(keys), False
    key = "tf-" + secrets.token_urlsafe(24)
    log(f"no --api-key or TUNEFORGE_API_KEYS given; this run's key: {key}")
    return (key,), True


@dataclass
class RagOptions:
    """--rag options; the router is built once the served model names are known (`serve`)."""

    specs: list[str]
    top_k: int = 3
    score_threshold: float = 0.0
    template: Optional[str] = None


def serve(
    target: Optional[str],
    adapter_specs: list[str],
    host: str,
    port: int,
    settings: ServerSettings,
    engine_cfg: EngineConfig,
    rag: Optional[RagOptions] = None,
    threads: Optional[int] = None,
    dtype: Optional[str] = None,
    log: Callable[[str], None] = print,
    registry: Optional[str] = None,
    trust_remote_code: Optional[bool] = None,
) -> None:
    """Plan, load and serve (blocks until the server stops). Every path, the dtype and every
    knowledge index are checked before any weights load. `trust_remote_code`: the operator's
    --trust-remote-code (None: TUNEFORGE_TRUST_REMOTE_CODE)."""
    import uvicorn

    from ...lm.load import REMOTE_CODE_ENV, dtype_name, set_threads
    from .app import create_app
    from .engine import Engine

    p = plan(target, adapter_specs, registry, trust_remote_code)
    if trust_remote_code:  # the engine's loaders (and adapters hot-swapped later) read the opt-in here
        os.environ[REMOTE_CODE_ENV] = "1"
    dtype = dtype_name(dtype or p.dtype)
    set_threads(threads)
    if rag:  # open every knowledge index before any weights load: a bad path fails fast
        from .rag import RagRouter

        settings = replace(settings, rag=RagRouter.from_specs(models=[p.base_name, *p.adapters], **asdict(rag)))
    log(f"loading {p.base_name} from {p.base_path} with {len(p.adapters)} adapter(s)")
    engine = Engine.load(p.base_path, p.base_name, p.adapters, engine_cfg, dtype, p.trust_remote_code)
    app = create_app(engine, settings, close_engine=True)
    log(
        f"serving {', '.join(e.name for e in engine.models())} on http://{host}:{port}/v1 "
        f"(request log: {settings.request_log or 'off'}; admin: {settings.admin_dir or 'off'})"
    )
    follower = None
    if p.followed:
        from .follow import RegistryFollower

        follower = RegistryFollower(
            engine, p.followed, p.registry, served={f.public: p.adapters[f.public] for f in p.followed}
        ).start()
        log("following " + ", ".join(f"{f.public} = {f.model}@{f.alias}" for f in p.followed) + f" in {p.registry}")
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        if follower is not None:
            follower.close()
