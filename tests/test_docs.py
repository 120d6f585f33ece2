from __future__ import annotations

from pathlib import Path

from airdask.config_doc import BEGIN, END, config_table

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_opens_with_the_two_setup_commands() -> None:
    lines = [line for line in README.read_text().splitlines() if line.strip()]
    assert lines[1] == "```sh"
    assert lines[2].startswith("make demo") and lines[3].startswith("make test")


def test_readme_config_table_matches_the_code() -> None:
    text = README.read_text()
    embedded = text[text.index(BEGIN) + len(BEGIN) : text.index(END)].strip()
    assert embedded == config_table(), "regenerate with: python -m airdask.config_doc"
