"""Jinja environment for the kit's templates (Dockerfiles, Helm chart files).

Sandboxed, StrictUndefined (a missing value is an error, not an empty string), and found both in an
installed wheel (`ascend_run/templates`, force-included at build time) and in a source checkout
(top-level `templates/`).
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from ascend_run import require_shipped
from ascend_run.errors import TemplateError


def template_root() -> Path:
    """Directory holding the templates: inside the installed package, else the checkout's `templates/`."""
    return require_shipped("templates", TemplateError)


# Chart sources are Helm templates themselves: their Jinja delimiters leave Helm's `{{ }}` alone.
HELM_SAFE_DELIMITERS = {"block_start_string": "[%", "block_end_string": "%]", "variable_start_string": "[[",
                        "variable_end_string": "]]", "comment_start_string": "[#", "comment_end_string": "#]"}


@cache
def environment(helm_safe: bool = False) -> SandboxedEnvironment:
    """The one Jinja environment of the kit (with `helm_safe`, the chart sources' delimiters)."""
    return SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(template_root())),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
        **(HELM_SAFE_DELIMITERS if helm_safe else {}),
    )


def render(name: str, **context: Any) -> str:
    """Render template `name` (path relative to the template root) with `context`."""
    try:
        return environment().get_template(name).render(**context)
    except jinja2.TemplateNotFound:
        raise TemplateError(f"template {name!r} not found under {template_root()}") from None
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"template {name!r}: {exc.message}") from None
