"""The documentation cannot drift from the code: every page is in the site's nav, every
``cw.`` / ``cacheway.`` name, ``cache.`` method and ``cacheway`` command it shows exists,
planned features appear only under "Not yet", and the README opens with the two commands.
(The site build itself, ``mkdocs build --strict``, runs in .ci/run.)"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
import shlex
from pathlib import Path
from typing import Any

import pytest

import cacheway as cw
from cacheway.cli import main as cli_main

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
# The contract lists planned names too, and the lead's map is checked by its own review.
NOT_OURS = {"design.md", "architecture.md"}
PAGES = sorted(p for p in DOCS.rglob("*.md") if p.name not in NOT_OURS)

README_OPENING = (
    "# cacheway\n"
    "\n"
    "```bash\n"
    'pip install -e ".[all]" && cacheway demo                 '
    "# install, then measure every write policy on memory + SQLite\n"
    'pip install -e ".[dev]" && python -m pytest -m "not slow" '
    "# install the test tools, then run the tests\n"
    "```\n"
)

# Planned in docs/design.md, not in the code: the pages may name them only under "Not yet".
NOT_YET: list[str] = []

FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
SPAN = re.compile(r"`([^`\n]+)`")
CW_NAME = re.compile(r"\bcw\.([A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*)")
CACHEWAY_NAME = re.compile(r"(?<![/\w])cacheway\.([a-z_]\w*(?:\.[A-Za-z_]\w*)*)")
CACHE_METHOD = re.compile(r"(?<![\w.])(a?cache)\.([A-Za-z_]\w*)")


def _text(page: Path) -> str:
    return page.read_text(encoding="utf-8")


def _code(text: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block, and ("span", text) of each inline span."""
    blocks = [(m.group(1), m.group(2)) for m in FENCE.finditer(text)]
    prose = FENCE.sub("", text)
    return blocks + [("span", s) for s in SPAN.findall(prose)]


def _resolve(dotted: str) -> Any:
    """The object ``cacheway.<dotted>`` names, importing submodules on the way."""
    obj: Any = cw
    path = "cacheway"
    for part in dotted.split("."):
        path += "." + part
        # ModuleNotFoundError when neither an attribute nor a module: the name is wrong
        obj = getattr(obj, part) if hasattr(obj, part) else importlib.import_module(path)
    return obj


def _nav_pages() -> list[str]:
    nav = _text(ROOT / "mkdocs.yml").split("\nnav:\n", 1)[1]
    return re.findall(r":\s+(\S+\.md)\s*$", nav, re.M)


def test_every_nav_page_exists_and_every_page_is_in_the_nav() -> None:
    nav = _nav_pages()
    assert len(nav) == len(set(nav)), "a page is twice in the nav"
    assert [p for p in nav if not (DOCS / p).is_file()] == []
    on_disk = {p.relative_to(DOCS).as_posix() for p in DOCS.rglob("*.md")}
    assert sorted(on_disk - set(nav)) == []


def test_readme_opens_with_the_two_commands() -> None:
    assert _text(ROOT / "README.md").startswith(README_OPENING)


def test_readme_links_into_the_docs_exist() -> None:
    links = re.findall(r"\]\(((?:docs/)[^)#\s]*)", _text(ROOT / "README.md"))
    assert links, "the README links into docs/"
    assert [link for link in links if not (ROOT / link).exists()] == []


@pytest.mark.parametrize("page", [*PAGES, ROOT / "README.md"], ids=lambda p: p.name)
def test_cw_and_cacheway_names_exist(page: Path) -> None:
    missing = []
    for _, code in _code(_text(page)):
        for name in CW_NAME.findall(code) + CACHEWAY_NAME.findall(code):
            try:
                _resolve(name)
            except (AttributeError, ImportError):
                missing.append(name)
    assert missing == []


@pytest.mark.parametrize("page", [*PAGES, ROOT / "README.md"], ids=lambda p: p.name)
def test_cache_methods_in_code_exist(page: Path) -> None:
    fronts = {"cache": cw.Cache, "acache": cw.AsyncCache}
    missing = [
        f"{var}.{attr}"
        for lang, code in _code(_text(page)) if lang == "python"
        for var, attr in CACHE_METHOD.findall(code)
        if not hasattr(fronts[var], attr)
    ]
    assert missing == []


def test_api_reference_targets_resolve() -> None:
    targets = [t for p in PAGES for t in re.findall(r"^::: cacheway\.(\S+)", _text(p), re.M)]
    assert len(targets) > 20
    for target in targets:
        assert _resolve(target) is not None


def _help(argv: list[str]) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = cli_main([*argv, "--help"])
    assert code == 0, argv
    return out.getvalue()


def _commands() -> list[str]:
    found = []
    for page in PAGES:
        for lang, code in _code(_text(page)):
            if lang not in ("console", "bash", "span"):  # not program output
                continue
            for line in code.splitlines():
                line = line.removeprefix("$ ").strip()
                if line.startswith("cacheway ") and not any(n in line for n in NOT_YET):
                    found.append(line)
    return found


@pytest.mark.parametrize("command", _commands())
def test_cli_commands_and_options_exist(command: str) -> None:
    words = shlex.split(command)[1:]
    path: list[str] = []
    for word in words:  # the subcommands: words the parser knows as one
        if word.startswith("-") or word in ("PATH", "URL") or "." in word or "/" in word:
            break
        path.append(word)
    text = _help(path)
    unknown = [w.split("=")[0] for w in words if w.startswith("--") and w.split("=")[0] not in text]
    assert unknown == [], f"{command}: {unknown} not in `cacheway {' '.join(path)} --help`"


def test_planned_features_appear_only_as_not_yet() -> None:
    """No example uses them; prose names them only in a paragraph that says "yet"."""
    for page in PAGES:
        text = _text(page)
        blocks = [m.group(2) for m in FENCE.finditer(text)]
        assert [n for n in NOT_YET for code in blocks if n in code] == [], page.name
        for paragraph in FENCE.sub("", text).split("\n\n"):
            named = [n for n in NOT_YET for span in SPAN.findall(paragraph) if n in span]
            assert not named or "yet" in paragraph, (page.name, named)


def test_docstring_rewriting_of_the_reference() -> None:
    """The griffe extension the reference uses turns every docstring of cacheway into
    Markdown: balanced code fences, no Sphinx role markup left."""
    spec = importlib.util.spec_from_file_location("docstrings", DOCS / "_griffe_docstrings.py")
    assert spec is not None
    assert spec.loader is not None
    ext = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(ext)
    checked = 0
    for name in cw.__all__:
        obj = getattr(cw, name)
        for doc in [obj.__doc__, *(getattr(v, "__doc__", None) for v in vars(obj).values()
                                   if callable(v))] if isinstance(obj, type) else [obj.__doc__]:
            if not doc:
                continue
            text = ext.fence_doctests(ext.plain_roles(doc))
            assert text.count("```") % 2 == 0, name
            assert not re.search(r":(class|func|meth|mod|data|attr):`", text), name
            checked += 1
    assert checked > 50
