"""Where the HTML pages' templates and static files live, and the one Jinja environment setup.

Shared by the app's own pages (rating link, errors), the simulator and the dashboard, so every
page renders with the same escaping, strictness and translation catalog.
"""

from __future__ import annotations

from pathlib import Path

import jinja2

from bot.i18n import install as install_i18n

TEMPLATE_DIR = Path(__file__).parent / "templates"
STATIC_DIR = Path(__file__).parent / "static"  # page scripts: the CSP allows no inline script


def make_templates() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATE_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    return install_i18n(env)  # the one catalog, in each render's ``lang``
