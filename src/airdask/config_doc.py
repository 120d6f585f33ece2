"""The configuration reference as a Markdown table, generated from :data:`OPTIONS`.

``python -m airdask.config_doc`` prints it; docs/configuration.md embeds it between markers
and a test checks that the two agree, so the documented defaults cannot drift from the code.
"""

from __future__ import annotations

from airdask.config import OPTIONS

BEGIN = "<!-- config-table:begin -->"
END = "<!-- config-table:end -->"


def config_table() -> str:
    rows = [
        "| section | key | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for section, options in OPTIONS.items():
        for key, option in options.items():
            default = f"`{option.default}`" if option.default else "(empty)"
            kind = " ".join(filter(None, [option.type.__name__, option.bounds()]))
            meaning = option.help
            if option.sensitive:
                meaning += " **Sensitive:** masked in output (`--show-secrets` shows it)."
            meaning = meaning.replace("|", "\\|")
            rows.append(f"| {section} | {key} | {kind} | {default} | {meaning} |")
    return "\n".join(rows)


def main() -> None:
    import sys

    sys.stdout.write(config_table() + "\n")


if __name__ == "__main__":
    main()
