"""Helpers of tests/test_accept4_cli_docs.py: the docs' Python blocks as runnable code, run
with the promises their comments make checked, and the generated test module a user
writes for ``cacheway.testing``.

Written from README, DESIGN.md and docs/ only (public names).
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path
from typing import Any

import cacheway as cw

ROOT = Path(__file__).resolve().parents[1]

_FENCE = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def doc_block(page: str, contains: str) -> str:
    """The first ```python block of ``page`` (relative to the checkout) holding ``contains``."""
    text = (ROOT / page).read_text()
    for block in _FENCE.findall(text):
        if contains in block:
            return str(block)
    raise AssertionError(f"{page}: no python block contains {contains!r} (docs changed?)")


def _comments(code: str) -> dict[int, str]:
    """Line number -> the text of the comment ending that line."""
    out: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            out[tok.start[0]] = tok.string.lstrip("#").strip()
    return out


_RAISES = re.compile(r"^(cw\.\w+Error)\b")


def run_block(code: str, ns: dict[str, Any]) -> list[str]:
    """Run ``code`` statement by statement in ``ns``. An expression statement whose
    comment is a Python expression (``# 11``, ``# User(name='Ada', ...)``) is checked to
    equal it; one whose comment starts with ``cw.SomeError`` is checked to raise it. Prose
    comments are left alone. Returns what was checked, so a test can say how many."""
    checked: list[str] = []
    comments = _comments(code)
    tree = ast.parse(code)
    for stmt in tree.body:
        source = ast.get_source_segment(code, stmt)
        assert source is not None
        comment = comments.get(stmt.end_lineno or stmt.lineno, "")
        if isinstance(stmt, ast.Expr) and comment:
            raises = _RAISES.match(comment)
            if raises:
                expected = eval(raises.group(1), ns)
                try:
                    eval(source, ns)
                except expected as exc:
                    checked.append(f"{source} raises {type(exc).__name__}")
                    continue
                raise AssertionError(f"{source!r}: the docs say {comment!r}; it did not raise")
            try:
                want = eval(comment, ns)
            except Exception:
                want = _NOTHING
            if want is not _NOTHING:
                got = eval(source, ns)
                assert got == want, f"{source!r}: the docs say {comment!r}, it gave {got!r}"
                checked.append(f"{source} == {comment}")
                continue
        exec(compile(ast.Module(body=[stmt], type_ignores=[]), "<doc>", "exec",
                     dont_inherit=True), ns)
    return checked


_NOTHING = object()


def close_caches(ns: dict[str, Any]) -> None:
    """Close every thread-front cache a block left open in ``ns`` (journals are locked)."""
    for value in list(ns.values()):
        if isinstance(value, cw.Cache):
            value.close(timeout=10)


# -- a user's own store for cacheway.testing -----------------------------------------------

SUITE_MODULE = '''
"""A user's suite module, as docs/guides/testing.md shows it: a CallbackStore over a dict."""
import threading

import cacheway as cw
from cacheway.testing import {suites}

DROP_EVERY = {drop_every}   # 0: a correct store; N: silently drops every Nth saved key


class DictData:
    def __init__(self):
        self.data = {{}}
        self.lock = threading.Lock()
        self.saved = 0

    def load_many(self, keys):
        with self.lock:
            return {{k: self.data[k] for k in keys if k in self.data}}

    def save_many(self, items):
        with self.lock:
            for k, v in items:
                self.saved += 1
                if DROP_EVERY and self.saved % DROP_EVERY == 0:
                    continue          # the bug: acknowledged, never kept
                self.data[k] = v

    def delete_many(self, keys):
        with self.lock:
            for k in keys:
                self.data.pop(k, None)

    def add_many(self, items):
        with self.lock:
            for k, d in items:
                self.data[k] = self.data.get(k, 0) + d
            return {{k: self.data[k] for k, _ in items}}

    def store(self):
        return cw.CallbackStore(load_many=self.load_many, save_many=self.save_many,
                                delete_many=self.delete_many, add_many=self.add_many)


class MyPair:
    def open_pair(self, pair):
        self.dict_data = DictData()              # one dict per test: "unique per test"

    def make_store(self):
        return self.dict_data.store()

    def make_backend(self, max_entries=None):
        return cw.MemoryBackend(max_entries=max_entries)


{classes}
'''

PAIR_CLASSES = {
    "GuaranteeSuite": "class TestMyPair(MyPair, GuaranteeSuite):\n    pass\n",
    "AsyncGuaranteeSuite": "class TestMyPairAsync(MyPair, AsyncGuaranteeSuite):\n    pass\n",
    "KeyValueStoreSuite": (
        "class TestMyStore(KeyValueStoreSuite):\n"
        "    records_marks = False  # testing.md: what a CallbackStore declares\n"
        "    has_tables = False\n"
        "    refuses_lone_surrogates = False\n"
        "\n"
        "    def make_store(self, table):\n"
        "        if not hasattr(self, 'tables'):\n"
        "            self.tables = {}\n"
        "        return self.tables.setdefault(table, DictData()).store()\n"
        "\n"
        "    def drop_tables(self, table):\n"
        "        self.tables = {}\n"
    ),
}


def suite_module(suites: list[str], drop_every: int = 0) -> str:
    return SUITE_MODULE.format(suites=", ".join(suites), drop_every=drop_every,
                               classes="\n\n".join(PAIR_CLASSES[s] for s in suites))
