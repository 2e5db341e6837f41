"""The admin UI at ``/admin`` (docs/admin.md): Jinja2 templates rendered by Litestar."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from api.admin.routes import admin_router

TEMPLATES = Path(__file__).parent / "templates"


def template_config() -> TemplateConfig[JinjaTemplateEngine]:
    # Autoescaped, and an undefined name is an error rather than an empty string.
    environment = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=select_autoescape(default=True),
        undefined=StrictUndefined,
    )
    return TemplateConfig(instance=JinjaTemplateEngine.from_environment(environment))


__all__ = ["admin_router", "template_config"]
