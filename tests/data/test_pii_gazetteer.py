"""The names-dataset gazetteer behind PERSON detection: data-only unpickling, a verified cache, fallback."""

from __future__ import annotations

import gzip
import os
import pickle
import subprocess
import sys

import pytest

from tuneforge.data import pii_gazetteer
from tuneforge.data.pii_gazetteer import _DataOnly, _parse, _serialise, gazetteer
from tuneforge.data.pii_persons import find_persons


def test_the_unpickler_builds_plain_data_and_refuses_any_class(tmp_path):
    good = tmp_path / "first_names.pkl.gz"
    with gzip.open(good, "wb") as fh:
        pickle.dump({"Ngozi": {"rank": {"NG": 12}, "country": {"NG": 0.9}}}, fh)
    with gzip.open(good, "rb") as fh:
        assert _DataOnly(fh).load()["Ngozi"]["rank"] == {"NG": 12}
    sentinel = tmp_path / "ran"
    bad = tmp_path / "bad.pkl.gz"

    class Gadget:
        def __reduce__(self):
            return (os.system, (f"touch {sentinel}",))

    with gzip.open(bad, "wb") as fh:
        pickle.dump({"x": Gadget()}, fh)
    with gzip.open(bad, "rb") as fh, pytest.raises(pickle.UnpicklingError, match="only plain data"):
        _DataOnly(fh).load()
    assert not sentinel.exists()


def test_the_cache_is_verified_and_a_damaged_one_is_rebuilt(tmp_path, monkeypatch):
    lists = {"first": {"Ngozi": 12}, "last": {"Okonkwo": 40}, "lone": {"Ngozi": 12}, "function": {"und": 0}}
    text = _serialise(lists)
    assert _parse(text) == lists
    assert _parse(text.replace("Okonkwo", "Okonkwa")) is None  # one changed byte
    monkeypatch.setenv("TUNEFORGE_CACHE", str(tmp_path))
    path = pii_gazetteer._cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(text.replace("Ngozi\t12", "Ngozi\t13", 1), encoding="utf-8")
    built = []
    monkeypatch.setattr(pii_gazetteer, "build", lambda data_dir: built.append(data_dir) or lists)
    gazetteer.cache_clear()
    try:
        assert gazetteer() == lists
        assert len(built) == 1  # the damaged file was not trusted
        assert _parse(path.read_text(encoding="utf-8")) == lists  # and was replaced
        gazetteer.cache_clear()
        assert gazetteer() == lists and len(built) == 1  # the good file is read, not rebuilt
    finally:
        gazetteer.cache_clear()


def test_without_names_dataset_person_detection_falls_back_to_the_built_in_lists(tmp_path):
    # a fresh interpreter in which the package cannot be found: no crash, curated names still found
    code = (
        "import importlib.util, sys\n"
        "real = importlib.util.find_spec\n"
        "importlib.util.find_spec = lambda n, *a: None if n == 'names_dataset' else real(n, *a)\n"
        "from tuneforge.data.pii_persons import find_persons\n"
        "t = 'Cheers, Björn Lindqvist. Osvaldo Quiroga confirmed.'\n"
        "print([t[s:e] for s, e in find_persons(t)])\n"
    )
    env = {**os.environ, "TUNEFORGE_CACHE": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "'Björn Lindqvist'" in out.stdout
    assert "names-dataset is not installed" in out.stderr
    assert not list(tmp_path.rglob("*.tsv"))  # nothing was built


@pytest.mark.parametrize(
    ("text", "names"),
    [
        # names no curated list holds, known from the gazetteer
        ("The invoice for Bongani Mthethwa bounced.", ["Bongani Mthethwa"]),
        ("Thiago Vasconcelos confirmed the booking.", ["Thiago Vasconcelos"]),
        ("Nizhoni replied within an hour.", ["Nizhoni"]),
        # words and places that are names in the dataset too
        ("Konto gesperrt, bitte melden.", []),
        ("Marrakech is lovely in spring.", []),
        ("Amex cards are accepted.", []),
        ("The parcel waits at the depot in Ashford Vale.", []),
    ],
)
def test_gazetteer_names_are_found_and_words_and_places_are_not(text, names):
    assert [text[s:e] for s, e in find_persons(text)] == names
