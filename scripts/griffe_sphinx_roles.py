"""A griffe extension for the docs site: Sphinx roles in docstrings become links.

The source docstrings are Google style and name other objects the Sphinx way,
``:class:`~neffos.Server```, which mkdocstrings would print as it is. This
extension rewrites each role into an optional cross-reference of
mkdocs-autorefs: a link when the object is on a page of the site, plain code
when it is not (an optional reference never fails the strict build). The role's
text follows Sphinx: ``~`` shows the last component only.

Loaded by mkdocs.yml (``plugins: mkdocstrings: handlers: python: options:
extensions``); nothing in the package imports it.
"""

from __future__ import annotations

import html
import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:class|func|meth|attr|mod|exc|data|obj):`(?P<target>[^`]+)`")


def _reference(obj: griffe.Object, target: str) -> str:
    shown = target.lstrip("~")
    title = shown.rsplit(".", 1)[-1] if target.startswith("~") else shown
    identifier = shown
    if not shown.startswith("neffos"):  # relative to the object's scope
        try:
            identifier = obj.resolve(shown.split(".", 1)[0])
            if "." in shown:
                identifier += "." + shown.split(".", 1)[1]
        except Exception:  # griffe cannot resolve it: the optional reference stays text
            identifier = shown
    if title.endswith("()"):
        identifier = identifier.removesuffix("()")
    return (
        f'<autoref identifier="{html.escape(identifier)}" optional>'
        f"<code>{html.escape(title)}</code></autoref>"
    )


class SphinxRoles(griffe.Extension):
    """Rewrite ``:role:`target``` in every docstring into an optional cross-reference."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None or ":`" not in obj.docstring.value:
            return
        obj.docstring.value = ROLE.sub(
            lambda match: _reference(obj, match["target"]), obj.docstring.value
        )
