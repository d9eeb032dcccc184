"""What value fidelity costs at ``set``: ``encoder(JSONSerializer())(value)`` against the
path write-back ``set`` took before it, ``compact(orjson.dumps(value))``.

    python bench/fidelity.py             # 9 rounds per side, about 20 s on 2 cores
    python bench/fidelity.py --rounds 5 --number 50000

The encoder does more than the baseline: it walks a dict or list to check that every part
is an exact built-in JSON type (a finite float, no tuple, no enum member) while copying the
containers (the copy answers reads), and calls orjson with its strict options. Each
round times ``--number`` calls of each side with ``timeit`` (ours and the baseline
alternate, and which goes first swaps every round); the table gives the median and max
per-call time over rounds and the median of the per-round ratios ours / baseline. The
last row is an A/A: the baseline against a second, identical baseline function on the
first value, timed the same way (the noise of the method: read the ratios against it).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import timeit
from collections.abc import Callable
from importlib.metadata import version
from typing import Any

import orjson

from cacheway.serializers import JSONSerializer, compact, encoder

VALUES: dict[str, Any] = {
    "small dict {'n': 12345}": {"n": 12345},
    "row of 5 fields": {"id": 1, "name": "alice", "city": "Paris", "score": 1.5, "ok": True},
    "5 fields, one a list": {"id": 1, "name": "alice", "tags": ["a", "b"], "score": 1.5,
                             "ok": True},
    "str (11 chars)": "hello world",
    "int": 123456789,
    "list of 10 ints": list(range(10)),
    "order (nested, 14 leaves)": {"user": {"id": 7, "name": "bob"}, "total": 42.5,
                                  "items": [{"sku": "a1", "qty": 1}, {"sku": "b2", "qty": 3}],
                                  "paid": False, "note": None},
}


def per_call_ns(fn: Callable[[], object], number: int) -> float:
    return timeit.Timer(fn).timeit(number) / number * 1e9


def alternate(ours: Callable[[], object], base: Callable[[], object], rounds: int,
              number: int) -> tuple[list[float], list[float]]:
    """One warm-up timing of each side, then ``rounds`` timings of each, alternating."""
    ours_ns: list[float] = []
    base_ns: list[float] = []
    per_call_ns(ours, max(1, number // 10))  # warm-up
    per_call_ns(base, max(1, number // 10))
    for i in range(rounds):
        for fn, out in ((ours, ours_ns), (base, base_ns))[:: 1 if i % 2 == 0 else -1]:
            out.append(per_call_ns(fn, number))
    return ours_ns, base_ns


def row(name: str, ours_ns: list[float], base_ns: list[float]) -> str:
    ratio = statistics.median(o / b for o, b in zip(ours_ns, base_ns))
    return (f"  {name:<26} {statistics.median(ours_ns):>10.0f} ns {max(ours_ns):>5.0f} ns "
            f"{statistics.median(base_ns):>12.0f} ns {max(base_ns):>5.0f} ns {ratio:>5.2f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=9, help="timings per side (default 9)")
    parser.add_argument("--number", type=int, default=100_000, help="calls per timing")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.number < 1:
        parser.error("--rounds and --number must be >= 1")
    encode = encoder(JSONSerializer())
    dumps = orjson.dumps

    print("value fidelity: encoder(JSONSerializer())(v)  vs  compact(orjson.dumps(v))")
    print(f"  python {platform.python_version()} ({platform.python_implementation()}), "
          f"{platform.system()} {platform.machine()}, orjson {version('orjson')}")
    print(f"  {args.rounds} rounds per side, {args.number} calls per timing, alternating")
    print()
    print(f"  {'value':<26} {'encode median':>13} {'max':>8} {'baseline median':>15} "
          f"{'max':>8} {'ratio':>6}")
    for name, value in VALUES.items():
        def ours(v: Any = value) -> object:
            return encode(v)

        def base(v: Any = value) -> object:
            return compact(dumps(v))

        print(row(name, *alternate(ours, base, args.rounds, args.number)))
    first = next(iter(VALUES.values()))

    def base_a(v: Any = first) -> object:
        return compact(dumps(v))

    def base_b(v: Any = first) -> object:
        return compact(dumps(v))

    print(row("A/A: baseline vs baseline", *alternate(base_a, base_b, args.rounds,
                                                      args.number)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
