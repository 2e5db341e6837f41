"""The admin UI at ``/admin`` (docs/admin.md): Jinja2 templates rendered by Litestar."""

from __future__ import annotations

from pathlib import Path

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape
from litestar.plugins.jinja import JinjaTemplateEngine
from litestar.template import TemplateConfig

from api.admin import audit_pages, reconciliation_pages
from api.admin.adjustment_pages import adjustments_page, decide_adjustment
from api.admin.alert_pages import acknowledge_incident, alerts_page
from api.admin.replay_pages import replay_apply, replay_form
from api.admin.routes import admin_router
from api.admin.widget_pages import save_widget_origins, widget_page

# The pages of their own modules use routes.py's helpers (signed_in, page), so they join
# its router here rather than routes.py importing them back.
for handler in (
    *audit_pages.PAGES,
    *reconciliation_pages.PAGES,
    adjustments_page,
    decide_adjustment,
    replay_form,
    replay_apply,
    alerts_page,
    acknowledge_incident,
    widget_page,
    save_widget_origins,
):
    admin_router.register(handler)

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
