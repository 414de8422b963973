"""Variant templates: ``{{ name }}`` placeholders filled from the variant and the page.

A variant whose payload has a ``template`` gets an ``html`` made from it when it is served
(the collector's default render hook): ``{{ field }}`` takes the variant's own fields first,
then the page's (``page``, ``category``). Values are HTML-escaped; unknown names are empty.
It is the small, safe subset of Jinja's syntax a variant needs; a site that wants more passes
its own render hook (docs/integrate.md).

>>> fill("<b>{{ headline }}</b> on {{ page }}", {"headline": "Tom & Jerry", "page": "/a"})
'<b>Tom &amp; Jerry</b> on /a'
"""

from __future__ import annotations

import html
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from trimtab.decide import Decision

_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def fill(template: str, values: Mapping[str, Any]) -> str:
    def one(match: re.Match[str]) -> str:
        value = values.get(match.group(1))
        return "" if value is None else html.escape(str(value))

    return _PLACEHOLDER.sub(one, template)


def render_template(decision: Decision, page: Mapping[str, Any]) -> dict[str, Any] | None:
    """The collector's default render hook: expand a payload's ``template`` into ``html``."""
    payload = decision.payload
    if not payload or not isinstance(payload.get("template"), str):
        return payload
    values = {**page, **payload}
    return {**payload, "html": fill(payload["template"], values)}


__all__ = ["fill", "render_template"]
