"""The manual's shape: every relative link of README.md and docs/*.md resolves (the file, and the
heading an ``#anchor`` names), every page is one whose commands the README tests run, each page
states the research notice, the README fits a first read, and prose lines are wrapped."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import MANUAL_PAGES, README, ROOT

PAGES = sorted({"README.md", *(p.relative_to(ROOT).as_posix() for p in (ROOT / "docs").glob("*.md"))})

MAX_PROSE_LINE = 120
README_MAX_WORDS = 3000

LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
FENCE = re.compile(r"^\s*```")


def outside_code_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, line) of the lines outside fenced code blocks."""
    lines, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line):
            fenced = not fenced
        elif not fenced:
            lines.append((number, line))
    return lines


def prose(text: str) -> list[tuple[int, str]]:
    """The lines outside code blocks with inline code spans blanked out (a link in code is no link)."""
    return [(number, re.sub(r"(`+)(?:(?!\1).)+?\1", "``", line)) for number, line in outside_code_blocks(text)]


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text without markup, lower case, punctuation other than
    '-' and '_' dropped, spaces as '-'."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text stays
    text = text.replace("`", "").replace("*", "").strip().lower()
    return re.sub(r"\s", "-", re.sub(r"[^\w\- ]", "", text))


def anchors(page: Path) -> set[str]:
    """The anchors of a page's headings; a repeated heading's get -1, -2, ... as on GitHub."""
    found, seen = set(), {}
    for _, line in outside_code_blocks(page.read_text(encoding="utf-8")):
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: str) -> list[tuple[int, str]]:
    return [(number, target) for number, line in prose((ROOT / page).read_text(encoding="utf-8"))
            for target in LINK.findall(line) if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I)]


def broken(page: str, target: str) -> str | None:
    """Why ``target``, a relative link in ``page``, does not resolve (None: it does)."""
    path, _, anchor = target.partition("#")
    resolved = ((ROOT / page).parent / path).resolve() if path else ROOT / page
    name = resolved.relative_to(ROOT).as_posix() if resolved.is_relative_to(ROOT) else str(resolved)
    if not resolved.exists():
        return f"no such file: {name}"
    if anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
        return f"no heading #{anchor} in {name}"
    return None


def test_the_checker_reads_links_and_anchors_as_github_does():
    assert slug("GRPO and DPO after SFT: `tools/swift/grpo_qwen3vl_lora.sh`, `tools/swift/dpo_qwen3vl_lora.sh`") \
        == "grpo-and-dpo-after-sft-toolsswiftgrpo_qwen3vl_lorash-toolsswiftdpo_qwen3vl_lorash"
    assert slug("How this differs from the reference system (XrayQwen3VL)") \
        == "how-this-differs-from-the-reference-system-xrayqwen3vl"
    line = "see [a](docs/a.md#x), ![b](app/b.png), [c](https://example.org) and `[d](not/a/link.md)`"
    assert LINK.findall(prose(line)[0][1]) == ["docs/a.md#x", "app/b.png", "https://example.org"]
    assert broken("README.md", "docs/no-such-page.md") == "no such file: docs/no-such-page.md"
    assert broken("README.md", "docs/developing.md#no-such-heading") == "no heading #no-such-heading in docs/developing.md"
    assert broken("docs/developing.md", "../README.md#the-manual") is None


@pytest.mark.parametrize("page", PAGES)
def test_every_relative_link_resolves(page):
    links = relative_links(page)
    failures = [f"{page}:{number}: {target}: {why}" for number, target in links
                if (why := broken(page, target))]
    assert not failures, "\n".join(failures)


def test_the_readme_links_every_page():
    linked = {target.partition("#")[0] for _, target in relative_links("README.md")}
    pages = {p for p in PAGES if p.startswith("docs/")}
    assert pages <= linked, f"pages missing from the README's table of contents: {sorted(pages - linked)}"


def test_every_page_runs_its_commands():
    """A page that is not in MANUAL_PAGES would keep its commands out of the README tests."""
    assert set(PAGES) <= set(MANUAL_PAGES), f"add to helpers.MANUAL_PAGES: {sorted(set(PAGES) - set(MANUAL_PAGES))}"
    assert all((ROOT / page).is_file() for page in MANUAL_PAGES)


@pytest.mark.parametrize("page", PAGES)
def test_every_page_states_the_research_notice(page):
    head = (ROOT / page).read_text(encoding="utf-8")[:600]
    assert "not for diagnosis" in head


def test_the_readme_fits_a_first_read():
    lines = README.splitlines()
    assert len(README.split()) <= README_MAX_WORDS
    first = "\n".join(lines[:40])
    assert "bash tools/quickstart.sh" in first and "bash tools/run_tests.sh" in first


@pytest.mark.parametrize("page", PAGES)
def test_prose_lines_are_wrapped(page):
    """Tables, headings, images and code blocks may run long, quoted ones too (a card's excerpt); prose may not."""
    long = [number for number, line in outside_code_blocks((ROOT / page).read_text(encoding="utf-8"))
            if len(line) > MAX_PROSE_LINE and not line.lstrip(" >").startswith(("|", "#", "!["))]
    assert not long, f"{page}: lines over {MAX_PROSE_LINE} characters: {long}"


def test_the_code_points_to_pages_that_exist():
    """Help texts, cards and comments name the page a topic moved to, not a README section."""
    sources = [p for folder in ("scripts", "tools", "app", "bench") for p in (ROOT / folder).rglob("*")
               if p.suffix in (".py", ".sh", ".sbatch") and p.is_file()]
    named, stale = set(), []
    for source in sources:
        text = source.read_text(encoding="utf-8")
        named |= set(re.findall(r"\bdocs/[\w-]+\.md\b", text))
        stale += [f"{source.relative_to(ROOT)}: {m}" for m in re.findall(r"README[:,] [A-Z][\w ,-]*", text)]
    assert not stale, f"README sections that moved to docs/: {stale}"
    assert named and all((ROOT / page).is_file() for page in named), sorted(named)


def test_the_site_lists_every_page():
    """mkdocs.yml's nav (`mkdocs build --strict` builds docs/ as a site) names every page in docs/."""
    nav = set(re.findall(r"^\s*- [^:]+:\s*(\S+\.md)\s*$", (ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M))
    pages = {p.removeprefix("docs/") for p in PAGES if p.startswith("docs/")}
    assert nav == pages, f"mkdocs.yml nav: missing {sorted(pages - nav)}, no such page {sorted(nav - pages)}"
