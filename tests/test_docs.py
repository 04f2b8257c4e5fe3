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
