"""How many Python frames one ``set`` runs, over how many modules, with how many switches
between modules (issue 11: a newcomer should find each policy's write path in one place).

    python bench/frames.py

Traces the third ``set`` of a warm cache (memory backend + SQLite) with ``sys.settrace``
and counts each Python function call ("frames"), the distinct source files they belong
to ("modules") and the times one call's module differs from the previous call's
("switches"). Calls into C (dict, locks, sqlite3) are not frames. ``set`` itself is the
first frame counted (no frame of this script is); files outside cacheway are shown by
their name (``threading.py``; ``<string>`` is code generated at run time).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import os
import sys
import tempfile
from collections.abc import Callable
from typing import Any

import cacheway as cw


def trace(fn: Callable[[], Any]) -> tuple[int, list[str], int]:
    calls: list[str] = []

    def tracer(frame: Any, event: str, arg: Any) -> Any:
        if event == "call":
            calls.append(frame.f_code.co_filename)
        return None

    sys.settrace(tracer)
    try:
        fn()
    finally:
        sys.settrace(None)
    switches = sum(1 for a, b in itertools.pairwise(calls) if a != b)
    return len(calls), sorted(set(calls), key=short_name), switches


def short_name(path: str) -> str:
    """A file of the package relative to it (``engine/read.py``), any other by its name."""
    package = os.path.dirname(os.path.abspath(cw.__file__)) + os.sep
    return path[len(package):] if path.startswith(package) else os.path.basename(path)


def main() -> None:
    argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="cacheway-bench-") as tmp:
        run(tmp)


def run(tmp: str) -> None:
    cases = {
        "write-through set": {"policy": cw.WriteThrough()},
        "write-back set": {"policy": cw.WriteBack()},
        "write-back set, journal": {"policy": cw.WriteBack(
            journal=os.path.join(tmp, "j"), fsync="never")},
        "write-around set": {"policy": cw.WriteAround()},
    }
    print(f"{'case':<26} {'frames':>6} {'modules':>7} {'switches':>8}  modules")
    for i, (name, kw) in enumerate(cases.items()):
        with cw.Cache(store=cw.SQLiteStore(os.path.join(tmp, f"{i}.db")),
                      backend=cw.MemoryBackend(), **kw) as cache:
            cache.set("k", 1)
            cache.set("k", 2)
            # partial is C: the first frame traced is Cache.set, none of this script's
            frames, modules, switches = trace(functools.partial(cache.set, "k", 3))
            cache.flush()
        short = ", ".join(short_name(m) for m in modules)
        print(f"{name:<26} {frames:>6} {len(modules):>7} {switches:>8}  {short}")


if __name__ == "__main__":
    main()
