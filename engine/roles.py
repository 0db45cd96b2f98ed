"""The declared role set: the roles an ``await`` node's signals may name.

It is the union of ``TRADEFLOW_ROLES`` (a comma list, :attr:`engine.config.Settings.roles`) and
the roles the installed plugins declare (their ``roles`` hook, see :mod:`engine.plugins`; the
web console declares ``viewer``, ``operator``, ``pm`` and ``admin``). Publishing a definition
and ``tradeflow definitions validate`` check every role a definition names against it.
"""

from __future__ import annotations

from engine import plugins
from engine.config import Settings


def declared_roles(settings: Settings | None = None) -> frozenset[str]:
    """``settings.roles`` (``TRADEFLOW_ROLES``, read at the edge) plus every installed plugin's ``roles`` hook.

    Without ``settings``: the plugins' roles only (nothing here reads the environment).
    """
    found = set(settings.roles) if settings is not None else set()
    for declared in plugins.hooks("roles"):
        found.update(declared() if callable(declared) else declared)
    return frozenset(found)
