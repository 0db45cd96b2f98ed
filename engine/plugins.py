"""The installed plugins (entry point group ``tradeflow.plugins``) and the hooks they offer.

A plugin's entry point is a function ``register(cli)``: given the CLI's click group (or
None outside the CLI) it adds its commands and returns its hooks, a dict of name -> value:

- ``demo(count)``: ``tradeflow demo`` runs this instead of the engine's own sample demo;
- ``fleets()``: the worker fleets (:class:`engine.ops.fleet.FleetSpec`) the plugin's services need;
- ``service_modules``: the modules a worker imports to register the plugin's actions;
- ``beat_schedule()``: beat entries of the plugin's periodic work;
- ``console()``: a :class:`console.app.ConsolePlugin` (pages, navigation, templates) for the web console;
- ``worker(settings)``: called once by the worker bootstrap (``engine.worker``) with the worker's
  :class:`engine.config.Settings`, after the app is built: the plugin builds what its actions use
  from them (and reads its own settings) there, not on each task;
- ``roles``: role names (a list, or a function giving one) the plugin's principals hold; an
  await node's signals may name them (:mod:`engine.roles`).

Used by the CLI, the fleet and the Celery configuration; it imports none of them.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

GROUP = "tradeflow.plugins"

_hooks: dict[str, dict[str, Any]] = {}
_loaded: list[bool] = []
_clis: list[Any] = []

OnError = Callable[[str, Exception], None]


def load(cli: Any | None = None, on_error: OnError | None = None) -> dict[str, dict[str, Any]]:
    """Every installed plugin's hooks, by plugin name; each plugin is registered once (and once
    more with ``cli`` when a CLI asks, so that it adds its commands there).

    A plugin that fails to import is left out and reported to ``on_error`` (name, exception):
    a half-installed plugin must not break the engine.
    """
    if _loaded and (cli is None or any(known is cli for known in _clis)):
        return _hooks
    _loaded.append(True)
    if cli is not None:
        _clis.append(cli)
    for ep in entry_points(group=GROUP):
        try:
            _hooks[ep.name] = ep.load()(cli) or {}
        except ImportError as exc:
            if on_error is not None:
                on_error(ep.name, exc)
    return _hooks


def hooks(name: str) -> list[Any]:
    """The hook ``name`` of every installed plugin that offers it."""
    return [found[name] for found in load().values() if name in found]


def service_modules() -> list[str]:
    """The modules whose actions the installed plugins' workers register (``service_modules`` hooks)."""
    return [module for modules in hooks("service_modules") for module in modules]
