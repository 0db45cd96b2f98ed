"""The web console: operators' pages (runs, instances, definitions), a JSON API, Prometheus metrics.

``tradeflow console`` serves it (:mod:`console.cli`); :func:`console.app.create_app` builds the
ASGI application. It talks to the engine only through :class:`engine.api.Engine`. Plugins add
pages of their own through their ``console`` hook (:mod:`engine.plugins`; the portfolio manager's
review pages come from there), so the generic console runs without them.
"""

from console.errors import ConsoleError

__all__ = ["ConsoleError"]
