"""One error path: every TuneforgeError from any command is a message and exit 2, never a traceback."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tuneforge.cli import app


def _user_errors() -> list[type]:
    """Every TuneforgeError subclass the package defines (all modules imported)."""
    import importlib
    import pkgutil

    import tuneforge
    from tuneforge.errors import TuneforgeError

    for m in pkgutil.walk_packages(tuneforge.__path__, "tuneforge."):
        importlib.import_module(m.name)
    out, todo = [], [TuneforgeError]
    while todo:
        cls = todo.pop()
        out.append(cls)
        todo += cls.__subclasses__()
    return sorted(set(out), key=lambda c: c.__qualname__)


def test_the_user_errors_include_those_that_escaped_as_tracebacks():
    names = {c.__name__ for c in _user_errors()}
    assert {"ObjectiveDataError", "RewardError", "RecipeError", "ExportError", "DtypeError"} <= names


@pytest.mark.parametrize("error", _user_errors(), ids=lambda c: c.__name__)
def test_a_stage_error_is_a_message_not_a_traceback(error, tmp_path, monkeypatch):
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.run import RunDir

    run = RunDir.create(recipe_from_dict({"name": "r", "output_dir": str(tmp_path)}))

    def raise_it(*a, **kw):
        e = error.__new__(error)  # some take structured arguments (RecipeError): set the message directly
        Exception.__init__(e, f"{error.__name__}: what is wrong — how to fix it")
        raise e

    monkeypatch.setattr("tuneforge.train.dispatch.train_run", raise_it)
    res = CliRunner().invoke(app, ["train", str(run.path)])
    assert res.exit_code == 2, res.output
    assert f"{error.__name__}: what is wrong — how to fix it" in res.output
    assert res.exception is None or isinstance(res.exception, SystemExit)


def test_a_bug_keeps_its_traceback(tmp_path, monkeypatch):
    """Only user errors are turned into messages: anything else is a bug and must stay loud."""
    from tuneforge.recipe import recipe_from_dict
    from tuneforge.run import RunDir

    run = RunDir.create(recipe_from_dict({"name": "r", "output_dir": str(tmp_path)}))
    monkeypatch.setattr("tuneforge.train.dispatch.train_run", lambda *a, **kw: {}["missing"])
    res = CliRunner().invoke(app, ["train", str(run.path)])
    assert isinstance(res.exception, KeyError)


def test_serve_takes_the_dtype_as_people_write_it(monkeypatch):
    seen = {}
    monkeypatch.setattr(
        "tuneforge.deploy.server.launch.serve",
        lambda target, adapters, host, port, settings, engine, rag, threads, dtype, *a: seen.update(dtype=dtype),
    )
    res = CliRunner().invoke(app, ["serve", "some-base", "--api-key", "k", "--dtype", "fp16"])
    assert res.exit_code == 0, res.output
    assert seen["dtype"] == "float16"
    res = CliRunner().invoke(app, ["serve", "some-base", "--api-key", "k", "--dtype", "int4"])
    assert res.exit_code == 2 and "dtype 'int4': use float32, bfloat16 or float16" in res.output
