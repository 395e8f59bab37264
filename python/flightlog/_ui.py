"""``flightlog ui``: a local web dashboard of a root (Starlette + uvicorn, the ``ui`` extra).

Pages (one HTML page, routed in the browser): the runs (filter, sort, paginate, select to
compare), a run (a chart per numeric field, phase bands, event markers, manifest, events;
updated every second while the run records), and a comparison. The JSON API under ``/api``
answers from :class:`~flightlog._dashdata.DashData`.

Security, as a local server should be:

- binds 127.0.0.1 unless ``--host`` says otherwise (and then a warning is printed);
- the catalog is opened read-only and queried with bound parameters only; a run id from a URL
  must be a safe name and name a run under the root;
- a bad request gets a 4xx JSON answer with a one-line message, an unexpected error a 500 with
  one line (never a traceback page);
- only GET/HEAD; the Host header must be the address served (a page of another site cannot read
  the API through DNS rebinding); nothing but this page's own scripts may run.
"""

from __future__ import annotations

import math
import sys
from typing import Any

__all__ = ["LOCAL_HOSTS", "make_app", "serve"]

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")
_CSP = (
    "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:; connect-src 'self'; "
    "base-uri 'none'; form-action 'none'"
)
# frame-ancestors works in the header only (a <meta> one is ignored, with a console error).
_CSP_HEADER = _CSP + "; frame-ancestors 'none'"


def _need_ui_extra() -> None:
    try:
        import starlette  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError as e:
        raise ImportError(f"flightlog ui needs the ui extra: pip install 'flightlog[ui]' ({e})") from None


def make_app(data: Any, *, allowed_hosts: list[str] | None = None) -> Any:
    """The Starlette application serving ``data`` (a :class:`~flightlog._dashdata.DashData`).
    ``allowed_hosts``: the Host header values accepted (None: any; tests)."""
    _need_ui_extra()
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.exceptions import HTTPException
    from starlette.requests import Request
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Route

    from ._dashdata import DashError
    from ._report import page_html

    headers = {
        "Content-Security-Policy": _CSP_HEADER,
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "no-referrer",
        "Cache-Control": "no-store",
    }

    def error(status: int, message: str) -> JSONResponse:
        return JSONResponse({"error": message}, status_code=status, headers=headers)

    def ok(value: Any) -> JSONResponse:
        return JSONResponse(value, headers=headers)

    def number(request: Request, name: str, kind: type, default: Any = None) -> Any:
        raw = request.query_params.get(name)
        if raw is None or raw == "":
            return default
        try:
            value = kind(raw)
        except ValueError:
            raise DashError(f"{name} must be {'an integer' if kind is int else 'a number'}, got {raw!r}") from None
        if isinstance(value, float) and not math.isfinite(value):
            raise DashError(f"{name} must be a finite number, got {raw!r}")
        return value

    async def guarded(request: Request, fn: Any) -> Response:
        try:
            return ok(await run_in_threadpool(fn))
        except DashError as e:
            return error(e.status, str(e))
        except Exception as e:  # one line, never a traceback page
            from ._render import error_line as _error_line

            print(f"flightlog ui: {request.url.path}: {_error_line(e)}", file=sys.stderr)
            return error(500, f"{type(e).__name__}: {_error_line(e)}")

    async def index(request: Request) -> Response:
        config = {"where": str(data.root), "title": "flightlog", "metric": "E"}
        return HTMLResponse(page_html(config, None, csp=_CSP), headers=headers)

    async def runs(request: Request) -> Response:
        def answer() -> Any:
            p = request.query_params
            desc = p.get("desc", "0")
            if desc not in ("0", "1", "true", "false"):
                raise DashError(f"desc must be 0 or 1, got {desc!r}")
            return data.runs(
                flow=p.get("flow") or None,
                status=p.get("status") or None,
                param=p.get("param") or None,
                q=p.get("q") or None,
                sort=p.get("sort") or None,
                desc=desc in ("1", "true"),
                offset=number(request, "offset", int, 0),
                limit=number(request, "limit", int, 100),
            )

        return await guarded(request, answer)

    async def run(request: Request) -> Response:
        return await guarded(request, lambda: data.run(request.path_params["run_id"]))

    async def series(request: Request) -> Response:
        def answer() -> Any:
            metric = request.query_params.get("metric")
            if not metric:
                raise DashError("give ?metric=NAME (a numeric telemetry column)")
            return data.series(
                request.path_params["run_id"],
                metric,
                buckets=number(request, "buckets", int, 800),
                x_min=number(request, "x_min", float),
                x_max=number(request, "x_max", float),
            )

        return await guarded(request, answer)

    async def compare(request: Request) -> Response:
        def answer() -> Any:
            ids = [r for r in (request.query_params.get("runs") or "").split(",") if r]
            return data.compare(
                ids,
                request.query_params.get("metric") or "E",
                group_by=request.query_params.get("group_by") or None,
                tol=number(request, "tol", float),
            )

        return await guarded(request, answer)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 404)
        detail = getattr(exc, "detail", None) or "not found"
        if status == 404:
            detail = f"no page {request.url.path!r}: the dashboard is at / and its API under /api"
        return error(status, str(detail))

    async def server_error(request: Request, exc: Exception) -> Response:
        return error(500, f"internal error: {type(exc).__name__}")

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/api/runs", runs, methods=["GET", "HEAD"]),
        Route("/api/run/{run_id}", run, methods=["GET", "HEAD"]),
        Route("/api/run/{run_id}/series", series, methods=["GET", "HEAD"]),
        Route("/api/compare", compare, methods=["GET", "HEAD"]),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: server_error})
    if allowed_hosts is not None:
        from starlette.middleware.trustedhost import TrustedHostMiddleware

        app.add_middleware(TrustedHostMiddleware, allowed_hosts=allowed_hosts)
    return app


def serve(
    root: Any = None,
    *,
    db_path: Any = None,
    catalog: str | None = None,
    host: str = "127.0.0.1",
    port: int = 0,
    timeout: float = 30.0,
    out: Any = print,
) -> int:
    """Serve the dashboard of ``root`` until interrupted; prints its URL (opens no browser).
    ``port=0`` picks a free port."""
    _need_ui_extra()
    import socket

    import uvicorn

    from ._dashdata import DashData

    if not 0 <= port <= 65535:
        raise ValueError(f"--port must be from 0 to 65535, got {port}")
    data = DashData(root, db_path=db_path, catalog=catalog, timeout=timeout)
    if host not in LOCAL_HOSTS:
        print(
            f"flightlog ui: WARNING: serving on {host}, not only this machine: anyone who can reach it "
            "can read every run under the root (there is no login). Use the default 127.0.0.1 and an SSH "
            "tunnel to share it.",
            file=sys.stderr,
        )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise OSError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)  # listening before the URL is printed: a client may connect at once
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{bound}/"
    # The Host header must name this server (DNS rebinding); any host when serving a wildcard address.
    allowed = None if host in ("0.0.0.0", "::") else [host, "localhost", "127.0.0.1", "[::1]", "::1"]
    app = make_app(data, allowed_hosts=allowed)
    out(f"flightlog ui: serving {data.root} at {url}  (Ctrl-C stops)")
    sys.stdout.flush()
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    server = uvicorn.Server(config)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
        data.close()
    return 0
