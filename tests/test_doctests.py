"""The examples in the docstrings run, so the docs cannot rot."""

from __future__ import annotations

import doctest
import importlib
import importlib.util
import pkgutil
from pathlib import Path

import pytest

import cacheway


def _has_examples(name: str) -> bool:
    spec = importlib.util.find_spec(name)
    origin = spec.origin if spec is not None else None
    if origin is None:
        return False
    lines = Path(origin).read_text(encoding="utf-8").splitlines()
    # examples marked +SKIP need a server: they illustrate, they are not run here
    return any(">>> " in line and "+SKIP" not in line for line in lines)


# Their examples need Redis / PostgreSQL and are marked +SKIP (they illustrate).
SERVER_ONLY = {"cacheway.backends.redis", "cacheway.stores.postgres"}

MODULES = sorted(
    m.name for m in pkgutil.walk_packages(cacheway.__path__, prefix="cacheway.")
    if _has_examples(m.name)
)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name: str, tmp_path: object, monkeypatch: pytest.MonkeyPatch
                                ) -> None:
    monkeypatch.chdir(tmp_path)  # examples that name a file write it here
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    if name not in SERVER_ONLY:
        assert result.attempted > 0, f"{name} has examples but none ran"
    assert result.failed == 0, f"{result.failed} failing example(s) in {name}"
