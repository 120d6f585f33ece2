"""The README (the front page) and the reference site in docs/ (built with MkDocs): the README
opens with the two set-up commands, its links lead somewhere, the site builds with --strict
(no broken link, anchor or unlisted page) and needs no network, and the configuration table
matches the code."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from airdask.config_doc import BEGIN, END, config_table

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
CONFIG_PAGE = REPO / "docs" / "configuration.md"

LINK = re.compile(r"\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6} (.+?)\s*$", re.M)
REMOTE_ASSET = re.compile(r"<(?:script|link|img)\b[^>]*(?:src|href)=\"(?:https?:)?//", re.I)


def github_slug(heading: str) -> str:
    """The anchor GitHub gives a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[^\w\- ]", "", heading.replace("`", "").lower())
    return text.replace(" ", "-")


def test_readme_opens_with_the_two_setup_commands() -> None:
    lines = [line for line in README.read_text().splitlines() if line.strip()]
    assert lines[1] == "```sh"
    assert lines[2].startswith("make demo") and lines[3].startswith("make test")


def _leads_somewhere(link: str) -> bool:
    path, _, anchor = link.partition("#")
    target = (REPO / path) if path else README
    if not target.exists():
        return False
    return not anchor or anchor in map(github_slug, HEADING.findall(target.read_text()))


def test_readme_links_lead_to_files_and_headings_that_exist() -> None:
    links = [link for link in LINK.findall(README.read_text()) if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in links)
    broken = [link for link in links if not _leads_somewhere(link)]
    assert not broken, f"README links to nothing: {broken}"


def test_config_table_matches_the_code() -> None:
    text = CONFIG_PAGE.read_text()
    embedded = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert embedded == config_table(), "regenerate with: python -m airdask.config_doc"


@pytest.mark.timeout(120)
def test_the_site_builds_strict_and_offline(tmp_path: Path) -> None:
    site = tmp_path / "site"
    argv = ["build", "--strict", "--config-file", str(REPO / "mkdocs.yml"), "--site-dir", str(site)]
    built = subprocess.run(
        [sys.executable, "-m", "mkdocs", *argv],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    pages = sorted(site.rglob("*.html"))
    names = {page.relative_to(site).as_posix() for page in pages}
    assert {"index.html", "configuration.html", "adr/index.html"} <= names
    adrs = {p.stem for p in (REPO / "docs" / "adr").glob("0*.md")}
    assert adrs and {f"adr/{stem}.html" for stem in adrs} <= names
    remote = [page.name for page in pages if REMOTE_ASSET.search(page.read_text())]
    assert not remote, f"pages that load scripts, styles or images from the network: {remote}"
