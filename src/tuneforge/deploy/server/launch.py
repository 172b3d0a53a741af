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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .engine import NAME_RE, AdapterError, adapter_folder


@dataclass
class ServePlan:
    base_path: str
    base_name: str
    dtype: str = "float32"
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


def _base_of_adapter(path: str) -> tuple[str, Optional[str], str, bool]:
    """(model.base id, cache dir, dtype, trust_remote_code) that an adapter was trained on."""
    p = Path(path).expanduser()
    run = p if _is_run(p) else p.parent if _is_run(p.parent) else None
    if run is not None:
        from ...run import RunDir

        m = RunDir(run).recipe().model
        return m.base, m.cache_dir, m.dtype, m.trust_remote_code
    cfg = json.loads((adapter_folder(p) / "adapter_config.json").read_text())
    base = cfg.get("base_model_name_or_path")
    if not base:
        raise AdapterError(f"{path}: adapter_config.json names no base model — give the base as the first argument")
    return base, None, "float32", False


def _display_name(base: str) -> str:
    p = Path(base)
    return p.stem if p.suffix == ".gguf" else p.name if ("/" in base or p.exists()) and p.name else base


def plan(target: Optional[str], adapter_specs: list[str], registry: Optional[str] = None) -> ServePlan:
    """Resolve what to serve; every path is checked before any weights are loaded."""
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
    p = _plan(target, adapters, resolve)
    p.followed, p.registry = followed, registry
    return p


def _plan(target: Optional[str], adapters: dict, resolve: Callable) -> ServePlan:
    for path in adapters.values():
        adapter_folder(path)  # fail fast, with the path in the message
    if target is None:
        if not adapters:
            raise AdapterError("nothing to serve: give a run directory or base model, and/or --adapter name=path")
        base, cache, dtype, trust = _base_of_adapter(next(iter(adapters.values())))
        src = resolve(base, cache)
        return ServePlan(src.path, _display_name(base), dtype, trust, adapters)
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
            return ServePlan(src.path, _display_name(m.base), m.dtype, m.trust_remote_code, {name: str(t), **adapters})
        if not run.model_dir.is_dir():
            raise FileNotFoundError(f"{t}: no trained model (adapter/ or model/) — run `tuneforge train {t}` first")
        return ServePlan(str(run.model_dir), t.resolve().name, m.dtype, m.trust_remote_code, adapters)
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


def serve(
    target: Optional[str],
    adapter_specs: list[str],
    host: str,
    port: int,
    keys: tuple[str, ...],
    settings_kw: dict,
    engine_kw: dict,
    threads: Optional[int] = None,
    dtype: Optional[str] = None,
    log: Callable[[str], None] = print,
    registry: Optional[str] = None,
) -> None:
    import uvicorn

    from ...lm.load import set_threads
    from .app import ServerSettings, create_app
    from .engine import Engine, EngineConfig
    from .limits import Limits

    p = plan(target, adapter_specs, registry)
    set_threads(threads)
    limits_kw = {k: v for k, v in settings_kw.pop("limits", {}).items() if v is not None}
    rag_kw = settings_kw.pop("rag", None)
    if rag_kw:  # open every knowledge index before any weights load: a bad path fails fast
        from .rag import RagRouter

        settings_kw["rag"] = RagRouter.from_specs(models=[p.base_name, *p.adapters], **rag_kw)
    settings = ServerSettings(api_keys=keys, limits=Limits(**limits_kw), **settings_kw)
    log(f"loading {p.base_name} from {p.base_path} with {len(p.adapters)} adapter(s)")
    engine = Engine.load(
        p.base_path, p.base_name, p.adapters, EngineConfig(**engine_kw), dtype or p.dtype, p.trust_remote_code
    )
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
