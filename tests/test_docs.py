"""The project's own documentation (docs/) stays true to the code.

- docs/config.md is what `scripts/make_config_docs.py` generates from the config declarations;
- every "methods.md <section>" the source cites is a numbered heading of docs/methods.md, and
  every "design.md, <heading>" a heading of docs/design.md;
- the relative links of the docs resolve (files and #anchors).
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
SRC = ROOT / "src" / "vlml"
SOURCE_SUFFIXES = (".py", ".yaml", ".yml", ".md", ".txt", ".json")

# "methods.md 5.8", "methods.md section 0", "methods.md 5.1-5.4", "methods.md 1.2, 4, 5.5, 5.7",
# "methods.md 5.2-5.4 and 5.7" (also with a docs/ prefix). Not "methods.md's 0.9997".
_NUM = r"\d+(?:\.\d+)?"
_CITE = re.compile(rf"methods\.md\s+(?:section\s+)?({_NUM}(?:\s*(?:-|–|,|and)\s*{_NUM})*)")
# "design.md, Conventions" and 'design.md, "The embedded toy world"'
_DESIGN_CITE = re.compile(r"design\.md,\s+(?:\"([^\"]+)\"|([A-Z][A-Za-z ]*?)(?=[).,;:]))")
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_SECTION_NUMBER = re.compile(r"^(\d+(?:\.\d+)*)\.?(?:\s|$)")


def _load_generator():
    path = ROOT / "scripts" / "make_config_docs.py"
    spec = importlib.util.spec_from_file_location("make_config_docs", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def cited_sections(text: str) -> list[str]:
    """Every section number a text cites as "methods.md ...", ranges expanded."""
    out: list[str] = []
    for m in _CITE.finditer(text):
        for part in re.split(r"\s*(?:,|and)\s*", m.group(1)):
            bounds = [b.strip() for b in re.split(r"\s*[-–]\s*", part) if b.strip()]
            if len(bounds) == 2 and "." in bounds[0] and "." in bounds[1]:
                (major, lo), (major2, hi) = (b.split(".", 1) for b in bounds)
                if major == major2 and int(lo) <= int(hi):
                    out += [f"{major}.{i}" for i in range(int(lo), int(hi) + 1)]
                    continue
            out += bounds
    return out


def _strip_code(text: str) -> str:
    """Markdown without fenced code blocks and inline code spans."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def headings(path: Path) -> list[str]:
    """The heading texts of a Markdown file (outside code blocks), in order."""
    text = re.sub(r"^```.*?^```", "", path.read_text(encoding="utf-8"), flags=re.S | re.M)
    return [m.group(2) for line in text.splitlines() if (m := _HEADING.match(line))]


def section_numbers(path: Path) -> set[str]:
    return {m.group(1) for h in headings(path) if (m := _SECTION_NUMBER.match(h))}


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """The #anchors a Markdown file offers: heading slugs (with GitHub's -1, -2 for repeats)
    and explicit `<a id="...">` / `<a name="...">` targets."""
    seen: dict[str, int] = {}
    out = set()
    for h in headings(path):
        base = slug(h)
        n = seen.get(base, 0)
        out.add(base if n == 0 else f"{base}-{n}")
        seen[base] = n + 1
    out |= set(re.findall(r"<a\s+(?:id|name)=\"([^\"]+)\"", path.read_text(encoding="utf-8")))
    return out


def _source_files() -> list[Path]:
    return sorted(p for p in SRC.rglob("*") if p.suffix in SOURCE_SUFFIXES and p.is_file()
                  and "__pycache__" not in p.parts)


# ---- the generated config page ---------------------------------------------------------------

def test_config_md_is_up_to_date():
    generator = _load_generator()
    expected = generator.render()
    current = (DOCS / "config.md").read_text(encoding="utf-8")
    assert current == expected, ("docs/config.md is out of date; regenerate it with "
                                 "`python scripts/make_config_docs.py`")


def test_config_md_lists_every_key_of_every_recipe():
    from vlml import config_docs, recipes

    text = (DOCS / "config.md").read_text(encoding="utf-8")
    for name in ("spml", "cbsa", "cap"):
        assert f"## {name}" in text
        for d in config_docs.describe(recipes.get(name).Config):
            assert f"`{d.key}`" in text, (name, d.key)
    assert "python scripts/make_config_docs.py" in text  # says how it is made


# ---- citations of the docs in the source -----------------------------------------------------

@pytest.mark.parametrize("text, sections", [
    ("(methods.md 1.1)", ["1.1"]),
    ("methods.md section 0: 1 positive", ["0"]),
    ("(methods.md 5.1-5.4).", ["5.1", "5.2", "5.3", "5.4"]),
    ("(methods.md 1.2, 4, 5.5, 5.7).", ["1.2", "4", "5.5", "5.7"]),
    ("methods.md 5.2-5.4 and 5.7)", ["5.2", "5.3", "5.4", "5.7"]),
    ("methods.md section 2, the section 4.6 form", ["2"]),
    ("(methods.md 4; a 1, b 0.998)", ["4"]),
    ("docs/methods.md 5.8", ["5.8"]),
    ("at methods.md's 0.9997 the teacher", []),
    ("(methods.md: 16)", []),
    ("methods.md marks them as choices", []),
])
def test_citation_parser(text, sections):
    assert cited_sections(text) == sections


def test_every_cited_methods_section_is_a_heading():
    numbers = section_numbers(DOCS / "methods.md")
    cited: dict[str, list[str]] = {}
    for path in _source_files():
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for section in cited_sections(line):
                cited.setdefault(section, []).append(f"{path.relative_to(ROOT)}:{lineno}")
    assert len(cited) >= 10, f"the citation scan found too little: {sorted(cited)}"
    missing = {s: where for s, where in cited.items() if s not in numbers}
    assert not missing, f"cited sections missing from docs/methods.md: {missing}"


def test_methods_md_keeps_the_section_numbers():
    """The numbering the code cites: 0, 1.1-1.4, 2, 3 (3.1-3.6), 4, 5 (5.1-5.9), 6."""
    expected = {"0", "1", "1.1", "1.2", "1.3", "1.4", "2", "3", "4", "5", "6"}
    expected |= {f"3.{i}" for i in range(1, 7)} | {f"5.{i}" for i in range(1, 10)}
    assert expected <= section_numbers(DOCS / "methods.md")


def test_every_cited_design_heading_exists():
    titles = {h.strip().lower() for h in headings(DOCS / "design.md")}
    found = []
    for path in _source_files():
        for m in _DESIGN_CITE.finditer(path.read_text(encoding="utf-8")):
            title = (m.group(1) or m.group(2)).strip()
            found.append(title)
            assert title.lower() in titles, f"{path.relative_to(ROOT)} cites design.md, {title!r}"
    assert found, "the design.md citation scan found nothing"
    assert {"conventions", "the embedded toy world"} <= titles  # the headings the code cites


# ---- links ----------------------------------------------------------------------------------

def _links(path: Path) -> list[str]:
    return re.findall(r"\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)", _strip_code(
        path.read_text(encoding="utf-8")))


@pytest.mark.parametrize("doc", sorted(DOCS.glob("*.md")), ids=lambda p: p.name)
def test_relative_links_resolve(doc):
    bad = []
    for target in _links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        file_part, _, anchor = target.partition("#")
        dest = (doc.parent / file_part).resolve() if file_part else doc
        if not dest.exists():
            bad.append(f"{target} (no file {dest})")
            continue
        if anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            bad.append(f"{target} (no anchor #{anchor} in {dest.name})")
    assert not bad, f"{doc.name}: broken links: {bad}"


def test_docs_cite_no_development_files():
    """The docs point to their own pages and the package, never to the development spec."""
    for doc in DOCS.glob("*.md"):
        text = doc.read_text(encoding="utf-8")
        assert "shared/spec" not in text and "shared/papers" not in text, doc.name
