"""Docstring examples run as tests (against the installed package)."""

from __future__ import annotations

import doctest
import importlib
import os
import tempfile

import pytest

MODULES = [
    "flightlog",
    "flightlog._schema",
    "flightlog._recorder",
    "flightlog._names",
    "flightlog.runs.manifest",
    "flightlog.runs.ids",
    "flightlog.runs.manager",
    "flightlog.runs.recover",
    "flightlog.catalog.manager",
    "flightlog.catalog.report",
]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name: str, tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.chdir(tmp_path)  # examples that write files do it here
    # ... and their tempfile.mkdtemp() folders land here too, removed with it.
    monkeypatch.setattr(tempfile, "tempdir", os.fspath(tmp_path))
    monkeypatch.setenv("FLIGHTLOG_ROOT", os.fspath(tmp_path / "root"))
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
