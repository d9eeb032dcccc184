"""A griffe extension for the API reference: docstrings written for ``help()`` and
doctest, made readable as Markdown before mkdocstrings renders them.

* Doctests (``>>>`` lines and their output) would read as nested block quotes: each run
  of them, with the output lines that follow, goes into a ``pycon`` code fence.
* Sphinx roles (``:class:`~cacheway.Cache```) would show their markup: they become inline
  code (``Cache``; the full path unless ``~`` asks for the last part).
"""

from __future__ import annotations

import re
from typing import Any

_ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`<]*?)(?:\s*<([^`>]*)>)?`")


def _role(match: re.Match[str]) -> str:
    tilde, text, target = match.group(1), match.group(2).strip(), match.group(3)
    if target is not None:  # :class:`the cache <cacheway.Cache>`
        return f"`{text}`"
    return f"`{text.rsplit('.', 1)[-1] if tilde else text}`"


def plain_roles(text: str) -> str:
    """``text`` with Sphinx cross-reference roles as inline code.

    >>> plain_roles("a :class:`~cacheway.Cache`, :func:`cacheway.open` and :mod:`x <y>`")
    'a `Cache`, `cacheway.open` and `x`'
    """
    return _ROLE.sub(_role, text)


def fence_doctests(text: str) -> str:
    r"""``text`` with each doctest block (``>>>`` up to a blank line) in a pycon fence.

    >>> fence_doctests("Intro.\n\n>>> 1 + 1\n2\n\nEnd.").splitlines()
    ['Intro.', '', '```pycon', '>>> 1 + 1', '2', '```', '', 'End.']
    """
    out: list[str] = []
    lines = text.split("\n")
    i = 0
    while i < len(lines):
        line = lines[i]
        stripped = line.lstrip()
        if stripped.startswith(">>>"):
            indent = line[: len(line) - len(stripped)]
            out.append(f"{indent}```pycon")
            while i < len(lines) and lines[i].strip():
                out.append(lines[i])
                i += 1
            out.append(f"{indent}```")
            continue
        out.append(line)
        i += 1
    return "\n".join(out)


try:
    import griffe
except ImportError:  # without the docs extra the functions above still serve tests/test_docs.py
    pass
else:

    class MarkdownDocstrings(griffe.Extension):
        """Rewrite every docstring griffe loads (see the module docstring)."""

        def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
            if obj.docstring is not None:
                obj.docstring.value = fence_doctests(plain_roles(obj.docstring.value))
