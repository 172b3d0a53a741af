"""Serve a registry alias: `--adapter support=registry:support@production`.

A background thread asks the registry, every `poll_s` seconds, which run directory each
followed alias points at (one indexed read-only SELECT), and hot-swaps the adapter when
it changed, so `tuneforge registry promote|rollback` takes effect within seconds and
without a restart. A registry that cannot be read, or a version that fails to load,
leaves the served version in place and is logged; the next poll tries again.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

log = logging.getLogger(__name__)
PREFIX = "registry:"


@dataclass(frozen=True)
class Followed:
    public: str  # served model name
    model: str  # registry model name
    alias: str  # alias (or version number) followed


def is_registry_spec(path: str) -> bool:
    return path.startswith(PREFIX)


def parse_spec(public: str, path: str) -> Followed:
    """`registry:NAME@ALIAS` (or `@VERSION`, or no `@`: the production alias).

    >>> parse_spec("support", "registry:support@production")
    Followed(public='support', model='support', alias='production')
    """
    from ...registry import DEFAULT_ALIAS, parse_ref

    name, what = parse_ref(path[len(PREFIX) :])
    return Followed(public, name, what or DEFAULT_ALIAS)


def resolve_spec(f: Followed, registry_path: str | Path) -> str:
    """The run directory the followed alias points at now (raises RegistryError if none)."""
    from ...registry import Registry

    return Registry(registry_path).get(f.model, f.alias)["run_dir"]


class RegistryFollower:
    def __init__(
        self,
        engine: Any,
        followed: list[Followed],
        registry_path: str | Path,
        poll_s: float = 1.0,
        served: Optional[dict[str, str]] = None,
        on_swap: Optional[Callable[[str, str], None]] = None,
    ):
        from ...registry import Registry

        self.engine, self.followed, self.poll_s = engine, followed, poll_s
        self.registry = Registry(registry_path)
        self.served = dict(served or {})  # public name -> run dir now served
        self.on_swap = on_swap
        self.swaps = 0
        self._stop = threading.Event()
        self._thread: Optional[threading.Thread] = None

    def check_once(self) -> list[tuple[str, str]]:
        """Swap every followed adapter whose alias moved; returns the (name, run dir) swapped in."""
        done = []
        for f in self.followed:
            try:
                target = (
                    self.registry.current_run_dir(f.model, f.alias)
                    if not f.alias.isdigit()
                    else resolve_spec(f, self.registry.path)
                )
            except Exception as exc:  # locked or missing registry: keep serving what we have
                log.warning("registry %s: cannot read %s@%s: %s", self.registry.path, f.model, f.alias, exc)
                continue
            if target is None or target == self.served.get(f.public):
                continue
            try:
                self.engine.replace_adapter(f.public, target)
            except Exception as exc:
                log.error(
                    "registry: %s@%s -> %s could not be loaded, still serving %s: %s",
                    f.model,
                    f.alias,
                    target,
                    self.served.get(f.public),
                    exc,
                )
                self.served[f.public] = target  # do not retry a broken version every second
                continue
            log.info("registry: %s now serves %s@%s (%s)", f.public, f.model, f.alias, target)
            self.served[f.public] = target
            self.swaps += 1
            done.append((f.public, target))
            if self.on_swap is not None:
                self.on_swap(f.public, target)
        return done

    def _loop(self) -> None:
        while not self._stop.wait(self.poll_s):
            self.check_once()

    def start(self) -> RegistryFollower:
        self._thread = threading.Thread(target=self._loop, name="tuneforge-registry-follow", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
