"""The ASGI application: middleware (sessions, security headers), the guard, the routers.

:func:`create_app` takes a ready :class:`console.web.ConsoleContext`; :func:`build_context`
makes one from the settings its caller read at the edge (``tradeflow console`` does both, its
settings read once per invocation: :mod:`engine.cli_context`). Nothing here reads the
environment. Plugins from the entry hook ``console`` of the tradeflow plugins
(:mod:`engine.plugins`) add routers, navigation entries and template folders.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jinja2
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, PlainTextResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from starlette.middleware.sessions import SessionMiddleware

from console.burndown import BurndownStore, Sampler
from console.config import ConsoleSettings
from console.console_keys import ConsoleKeys
from console.errors import ConsoleError, Forbidden, NeedLogin
from console.throttle import LoginThrottle
from console.users import UserStore
from console.web import ConsoleContext, guard, install_filters, render
from engine.config import Settings
from engine.errors import InvalidInput, InvalidState, NotFound, TradeflowError

log = logging.getLogger(__name__)

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"


@dataclass
class ConsolePlugin:
    """What a plugin adds: a router, navigation entries, a template folder, queues to watch."""

    name: str
    router: APIRouter
    nav: list[tuple[str, str]] = field(default_factory=list)
    templates: Path | None = None
    queues: list[str] = field(default_factory=list)
    #: Tables it adds to a batch's page (:data:`console.batches.BatchDetail`), e.g. block orders.
    batch_detail: Callable[[Any], list[Any]] | None = None


def discover_plugins() -> list[ConsolePlugin]:
    """The console pages of the installed tradeflow plugins (their ``console`` hook, :mod:`engine.plugins`)."""
    from engine import plugins

    found = []
    for name, hooks in plugins.load(on_error=lambda n, exc: log.warning("plugin %s not loaded: %s", n, exc)).items():
        if "console" not in hooks:
            continue
        try:
            found.append(hooks["console"]())
        except ImportError as exc:  # a half-installed plugin must not take the console down
            log.warning("console pages of plugin %s not loaded: %s", name, exc)
    return found


def build_context(settings: ConsoleSettings, engine_settings: Settings, engine: Any = None,
                  notice: Callable[[str], None] | None = None) -> ConsoleContext:
    """The console's context on the configured Redis (``engine=False``: users and tokens only).

    ``settings`` and ``engine_settings`` are read at the edge (``tradeflow console``, the demo)
    and passed in. The console and its engine share one Redis client. ``notice`` is told when
    the embedded Redis serves (see :func:`engine.ops.embedded.resolve_redis_url`).
    """
    from engine.app import build_engine
    from engine.connections import client_for, state_url
    from engine.ops.fleet import all_queues, default_fleets
    from engine.roles import declared_roles

    url = state_url(engine_settings, notice=notice)  # resolved once: the engine and the console use the same Redis
    engine_settings = engine_settings.with_redis(url)
    client = client_for(engine_settings, url)
    if engine is None:
        engine = build_engine(engine_settings, client=client)
    keys = ConsoleKeys.under(engine_settings.key_prefix)
    return ConsoleContext(
        engine=engine, users=UserStore(client, keys, settings.password_hasher()),
        throttle=LoginThrottle(client, keys, free=settings.login_free_failures, base=settings.login_base_delay,
                               maximum=settings.login_max_delay, address_free=settings.login_address_free),
        burndown=BurndownStore(client, keys, retention_seconds=engine_settings.retention_seconds), settings=settings,
        queues=sorted(all_queues(default_fleets())) if engine else [],
        roles=declared_roles(engine_settings),
    )


def _security_headers(response: Response, nonce: str) -> None:
    response.headers["Content-Security-Policy"] = (
        f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
    response.headers["X-Frame-Options"] = "DENY"
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["Cache-Control"] = "no-store"


def _wants_json(request: Request) -> bool:
    return (request.url.path.startswith("/api/") or request.url.path == "/metrics"
            or request.headers.get("authorization", "")[:7].lower() == "bearer ")


def create_app(ctx: ConsoleContext, plugins: Iterable[ConsolePlugin] | None = None, *,
               sample: bool = True) -> FastAPI:
    """The console application on ``ctx`` with ``plugins`` (default: the installed ones)."""
    from console import admin, api, audit, auth, batches, limits, metrics, ops

    plugins = list(discover_plugins() if plugins is None else plugins)
    loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(TEMPLATES))]
    loaders += [jinja2.FileSystemLoader(str(p.templates)) for p in plugins if p.templates]
    env = jinja2.Environment(loader=jinja2.ChoiceLoader(loaders), autoescape=True)
    ctx.templates = Jinja2Templates(env=env)
    env.globals["console_css"] = (STATIC / "console.css").read_text()
    env.globals["console_js"] = (STATIC / "console.js").read_text()
    install_filters(ctx.templates, ctx.zone)
    ctx.nav = [("Runs", "/runs"), ("Definitions", "/definitions")]
    for plugin in plugins:
        ctx.nav += plugin.nav
        ctx.queues = sorted({*ctx.queues, *plugin.queues})

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        sampler = Sampler(ctx.engine, ctx.burndown, ctx.settings.sample_seconds) if sample else None
        if sampler:
            sampler.start()
        yield
        if sampler:
            sampler.stop()

    app = FastAPI(title="tradeflow console", docs_url=None, redoc_url=None, openapi_url=None,
                  dependencies=[Depends(guard)], lifespan=lifespan)
    app.state.console = ctx
    app.state.plugins = plugins

    @app.middleware("http")
    async def headers(request: Request, call_next: Any) -> Response:
        request.state.nonce = secrets.token_urlsafe(16)
        response = await call_next(request)
        _security_headers(response, request.state.nonce)
        return response

    app.add_middleware(SessionMiddleware, secret_key=ctx.settings.session_secret(), session_cookie="tradeflow_console",
                       max_age=int(ctx.settings.session_hours * 3600), same_site="strict",
                       https_only=ctx.settings.secure_cookies)

    @app.exception_handler(NeedLogin)
    async def need_login(request: Request, exc: NeedLogin) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": str(exc)}, status_code=401, headers={"WWW-Authenticate": "Bearer"})
        return RedirectResponse(f"/login?next={request.url.path}", status_code=303)

    @app.exception_handler(Forbidden)
    async def forbidden(request: Request, exc: Forbidden) -> Response:
        if _wants_json(request) or request.headers.get("x-csrf-token") is not None:
            return JSONResponse({"error": str(exc)}, status_code=403)
        if getattr(request.state, "user", None) is None:
            return PlainTextResponse(str(exc), status_code=403)
        return render(request, "error.html", status_code=403, title="Not allowed", message=str(exc))

    @app.exception_handler(TradeflowError)
    async def engine_error(request: Request, exc: TradeflowError) -> Response:
        code = 404 if isinstance(exc, NotFound) else 409 if isinstance(exc, InvalidState | InvalidInput) else 400
        if _wants_json(request) or getattr(request.state, "user", None) is None:
            return JSONResponse({"error": str(exc)}, status_code=code)
        return render(request, "error.html", status_code=code, title="Cannot do that", message=str(exc))

    @app.exception_handler(LookupError)
    async def not_found(request: Request, exc: LookupError) -> Response:
        if _wants_json(request):
            return JSONResponse({"error": str(exc)}, status_code=404)
        return render(request, "error.html", status_code=404, title="Not found", message=str(exc))

    @app.exception_handler(ConsoleError)
    async def bad_request(request: Request, exc: ConsoleError) -> Response:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> PlainTextResponse:
        return PlainTextResponse("ok")

    @app.get("/", include_in_schema=False)
    def home() -> RedirectResponse:
        return RedirectResponse("/runs", status_code=303)

    app.include_router(auth.router)
    app.include_router(ops.router)
    app.include_router(api.router)
    app.include_router(metrics.router)
    for pages in (batches, audit, limits, admin):
        app.include_router(pages.router)
    for plugin in plugins:
        app.include_router(plugin.router)
    return app


__all__ = ["ConsolePlugin", "build_context", "create_app", "discover_plugins", "HTMLResponse"]
