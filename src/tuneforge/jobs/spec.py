"""What a fine-tuning job is: its configuration, the request OpenAI clients send, the recipe it
runs, and the check of its files by the data stage.

A job becomes an ordinary run directory: `job_recipe` turns the request (base model, uploaded
files, `method`, `hyperparameters`) into a `Recipe` on top of the server's job defaults (a
recipe file plus dotted overrides), and the worker runs it through the same stage functions
as `tuneforge run` (prepare, then train).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, confloat, conint

from ..errors import TuneforgeError
from ..recipe import DpoObjective, Recipe, load_recipe, recipe_from_dict

SUFFIX_RE = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
SERVABLE_STRATEGIES = ("lora", "qlora", "dora")  # results must load next to the base model in the server


@dataclass
class JobsConfig:
    root: str = "tuneforge-jobs"  # jobs.db, files/, runs/
    recipe: Optional[str] = None  # recipe YAML every job starts from (default: the built-in defaults)
    overrides: tuple = ()  # dotted overrides for every job, e.g. ("training.threads=2",)
    worker: bool = True  # run a worker thread inside the server
    poll_s: float = 1.0  # how often an idle worker looks for work (and the server for new models)
    heartbeat_s: float = 5.0  # how often a busy worker says it is alive
    stale_after_s: float = 60.0  # a job's lease: taken over once no heartbeat renewed it for this long
    max_attempts: int = 3  # runs of one job (a killed worker's job is resumed until then)
    stop_grace_s: float = 30.0  # a job's training process told to stop (at its next step) is killed after this
    max_file_bytes: int = 100 << 20  # largest upload

    def __post_init__(self) -> None:
        # jobs store file and run paths: absolute, so a worker started from another folder finds them
        self.root = str(Path(self.root).expanduser().resolve())

    @property
    def db_path(self) -> Path:
        return Path(self.root) / "jobs.db"

    @property
    def files_dir(self) -> Path:
        return Path(self.root) / "files"

    @property
    def runs_dir(self) -> Path:
        return Path(self.root) / "runs"

    def base_recipe(self) -> Recipe:
        """The defaults every job starts from; raises RecipeError/ValueError when unusable."""
        r = load_recipe(self.recipe, list(self.overrides))
        if r.strategy.kind not in SERVABLE_STRATEGIES:
            raise ValueError(
                f"jobs recipe: strategy.kind={r.strategy.kind!r} — fine-tuning jobs train LoRA adapters "
                f"({', '.join(SERVABLE_STRATEGIES)}) so the result is served next to the base model"
            )
        return r


# ------------------------------------------------------------------ the request (OpenAI's shape)
Auto = Literal["auto"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hyperparameters(_Strict):
    n_epochs: Union[Auto, conint(ge=1, le=50)] = "auto"
    batch_size: Union[Auto, conint(ge=1, le=256)] = "auto"
    learning_rate_multiplier: Union[Auto, confloat(gt=0, le=10)] = "auto"


class DpoHyperparameters(Hyperparameters):
    beta: Union[Auto, confloat(gt=0, le=2)] = "auto"


class SupervisedMethod(_Strict):
    hyperparameters: Optional[Hyperparameters] = None


class DpoMethod(_Strict):
    hyperparameters: Optional[DpoHyperparameters] = None


class Method(_Strict):
    type: Literal["supervised", "dpo"]
    supervised: Optional[SupervisedMethod] = None
    dpo: Optional[DpoMethod] = None


class CreateJobRequest(_Strict):
    model: str
    training_file: str
    validation_file: Optional[str] = None
    hyperparameters: Optional[Hyperparameters] = Field(None, description="deprecated by OpenAI in favour of method")
    method: Optional[Method] = None
    suffix: Optional[str] = None
    seed: Optional[conint(ge=0, le=2**31 - 1)] = None
    metadata: Optional[dict[str, str]] = None
    integrations: Optional[list[Any]] = None


class JobRequestError(TuneforgeError, ValueError):
    """A create request that cannot run; `param` names the field (OpenAI's error `param`)."""

    def __init__(self, message: str, param: Optional[str], code: str = "invalid_request"):
        super().__init__(message)
        self.param, self.code = param, code


def requested_method(req: CreateJobRequest) -> tuple[str, dict]:
    """(method type, requested hyperparameters) from `method` or the older top-level `hyperparameters`."""
    kind = req.method.type if req.method else "supervised"
    sub = getattr(req.method, kind, None) if req.method else None
    hp = sub.hyperparameters if sub and sub.hyperparameters else None
    if req.hyperparameters is not None:
        if hp is not None or kind != "supervised":
            raise JobRequestError(
                "give hyperparameters inside method.<type>.hyperparameters, not also at the top level",
                "hyperparameters",
            )
        hp = req.hyperparameters
    if req.method and getattr(req.method, "dpo" if kind == "supervised" else "supervised") is not None:
        raise JobRequestError(f"method.type is {kind!r} but another method's settings are given", "method")
    hp = hp or (DpoHyperparameters() if kind == "dpo" else Hyperparameters())
    return kind, hp.model_dump()


def resolve_hyperparameters(kind: str, hp: dict, base: Recipe) -> dict:
    """Numbers for every "auto": the job defaults' own values (learning-rate multiplier 1)."""
    epochs = base.training.epochs
    out = {
        "n_epochs": int(epochs) if float(epochs).is_integer() else epochs,
        "batch_size": base.training.batch_size,
        "learning_rate_multiplier": 1.0,
    }
    if kind == "dpo":
        # the job defaults' beta when they train DPO, else DPO's own default
        out["beta"] = base.objective.beta if base.objective.kind == "dpo" else DpoObjective().beta
    return {k: (out[k] if hp.get(k, "auto") == "auto" else hp[k]) for k in out}


def model_name(base: str, suffix: Optional[str], job_id: str) -> str:
    """`ft:<base>:<suffix>:<id>` (the id is the job id's first 8 random characters).

    >>> model_name("tiny", "support", "ftjob-0123456789abcdef01234567")
    'ft:tiny:support:01234567'
    """
    return f"ft:{base}:{suffix or ''}:{job_id.split('-', 1)[1][:8]}"


def job_recipe(
    base: Recipe,
    job_id: str,
    base_path: str,
    train_path: str,
    val_path: Optional[str],
    kind: str,
    hp: dict,
    seed: int,
    runs_dir: Path,
    registry_name: Optional[str] = None,
) -> Recipe:
    """The run a job is: the job defaults with the job's model, files, method and hyperparameters.

    The job's files are its data exactly (no split is taken off, as OpenAI does); evaluation
    and export are left to `tuneforge evaluate/export` on the run directory. Jobs with the same
    base and suffix are versions of one model in the registry (`registry_name`).
    """
    d = json.loads(json.dumps(base.to_dict()))
    d.update(name=job_id, output_dir=str(runs_dir))
    if registry_name:
        d["registry_name"] = registry_name
    d["model"]["base"] = base_path
    d["data"].update(
        train=train_path,
        validation=val_path,
        test=None,
        format="auto",
        fields={},
        validation_fraction=0.0,
        test_fraction=0.0,
        on_error="fail",
        seed=seed,
        stratify_by=None,
        max_per_label=None,
        balance="off",
        estimate_time=False,
    )
    d["objective"]["kind"] = "dpo" if kind == "dpo" else "sft"
    if kind == "dpo":
        d["objective"]["beta"] = float(hp["beta"])
    t = d["training"]
    t.update(
        epochs=float(hp["n_epochs"]),
        batch_size=int(hp["batch_size"]),
        seed=seed,
        learning_rate=base.training.learning_rate * float(hp["learning_rate_multiplier"]),
    )
    if val_path is None:
        t["early_stopping_patience"] = None  # needs validation data
    d["evaluation"]["enabled"] = False
    d["export"]["enabled"] = False
    return recipe_from_dict(d, f"job {job_id}")


# ------------------------------------------------------------------ the files, checked by the data stage
def check_file(path: str, kind: str, param: str, label: str, limit: int = 10) -> Optional[dict]:
    """OpenAI's job `error` object when the file cannot train `kind`, naming every bad line; else None."""
    from ..data.formats import SFT_FORMATS
    from ..data.load import DataFileError
    from ..data.validate import load_validated

    code = f"invalid_{param}"
    try:
        data = load_validated(path, "auto", require_assistant=True)
    except DataFileError as exc:
        return {"code": code, "param": param, "message": f"{label}: {str(exc).replace(path, '').lstrip(': ')}"}
    if data.problems:
        shown = "; ".join(str(p) for p in data.problems[:limit])
        more = f"; … and {len(data.problems) - limit} more" if len(data.problems) > limit else ""
        lines = sorted({p.line for p in data.problems})
        return {
            "code": code,
            "param": param,
            "message": f"{label}: {len(lines)} invalid line(s) ({', '.join(map(str, lines[:20]))}"
            f"{', …' if len(lines) > 20 else ''}): {shown}{more}",
        }
    if not data.rows:
        return {"code": code, "param": param, "message": f"{label}: the file holds no examples"}
    wanted = ("preference", "openai_preference") if kind == "dpo" else SFT_FORMATS
    if data.format not in wanted:
        what = (
            "preference pairs (input/preferred_output/non_preferred_output or prompt/chosen/rejected)"
            if kind == "dpo"
            else 'chat examples ({"messages": [...]}) or another supervised format'
        )
        return {
            "code": code,
            "param": param,
            "message": f"{label}: rows are in the {data.format!r} format; method {kind!r} needs {what}",
        }
    return None
