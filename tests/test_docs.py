"""Reference that is generated from the code matches it."""

from pathlib import Path

from cli.config_doc import render_configuration

ROOT = Path(__file__).resolve().parents[1]


def test_the_configuration_page_is_what_the_settings_say():
    """docs/configuration.md is generated from cjcore/settings.py: regenerate it with
    `python -m cli.config_doc > docs/configuration.md` after changing a setting."""
    assert (ROOT / "docs" / "configuration.md").read_text() == render_configuration()


def test_every_setting_is_documented():
    assert "| — |" not in render_configuration()


def test_every_docs_heading_the_code_names_exists():
    """A comment or docstring pointing at `docs/X.md "Heading"` (or "Head…") names a heading of that page."""
    import re
    from pathlib import Path

    root = Path(__file__).parent.parent
    cited = re.compile(r'(docs/[a-z_]+\.md) "([^"]+)"')
    found = []
    for path in root.glob("[a-z]*/**/*.py"):
        for doc, heading in cited.findall(path.read_text()):
            headings = [h.lstrip("#").strip() for h in (root / doc).read_text().splitlines() if h.startswith("#")]
            wanted = heading.rstrip("…")
            found.append((path.name, doc, heading))
            assert any(h.startswith(wanted) for h in headings), f"{path}: {doc} has no heading {heading!r}"
    assert len(found) >= 4  # the check above looked at real citations
