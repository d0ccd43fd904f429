"""Security headers on every response, and the API docs served from local files (no CDN).

FastAPI's stock ``/docs`` page loads Swagger UI from a public CDN (an egress from every
admin's browser and a script we do not control) with an inline script. Here the Swagger UI
files come from the ``swagger-ui-bundle`` package and the start-up script is a file of
ours, so the page works offline under a strict Content-Security-Policy.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; connect-src 'self'; font-src 'self'; object-src 'none'; "
    "base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
}
DOCS_ASSETS = "/docs-assets"
_DOCS_HTML = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Enclave API</title>
<link rel="stylesheet" href="{DOCS_ASSETS}/swagger-ui.css"></head>
<body><div id="swagger-ui"></div>
<script src="{DOCS_ASSETS}/swagger-ui-bundle.js"></script>
<script src="/docs-init.js"></script></body></html>
"""
_DOCS_INIT = (
    'window.ui = SwaggerUIBundle({url: "/openapi.json", dom_id: "#swagger-ui", '
    "deepLinking: true});\n"
)


def install_security_headers(app: FastAPI, hsts: bool) -> None:
    """Add the headers to every response (API, web app, docs, errors); HSTS when served over TLS."""
    headers = dict(SECURITY_HEADERS)
    if hsts:
        headers["Strict-Transport-Security"] = "max-age=31536000"

    @app.middleware("http")
    async def _security_headers(request: Request, call_next):  # noqa: ANN202
        response = await call_next(request)
        for name, value in headers.items():
            response.headers.setdefault(name, value)
        if request.url.path.startswith("/api/"):
            response.headers.setdefault("Cache-Control", "no-store")
        return response


def install_local_docs(app: FastAPI) -> None:
    """``/docs`` with Swagger UI from the installed package; nothing is fetched from elsewhere."""
    import swagger_ui_bundle

    app.mount(
        DOCS_ASSETS, StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    async def _docs() -> HTMLResponse:
        return HTMLResponse(_DOCS_HTML)

    @app.get("/docs-init.js", include_in_schema=False)
    async def _docs_init() -> Response:
        return Response(_DOCS_INIT, media_type="application/javascript")
