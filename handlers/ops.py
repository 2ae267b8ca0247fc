"""Operational endpoints: liveness, readiness, the OpenAPI document and its human-readable page."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar

from handlers.base import BaseHandler, Out, endpoint
from models.policy import PUBLIC

STATIC_DIR = Path(__file__).parent / "static"


class Liveness(Out):
    status: str


class Readiness(Out):
    status: str
    checks: dict[str, bool]


class HealthzHandler(BaseHandler):
    access = PUBLIC

    @endpoint("The process is alive", response=Liveness, tags=("operations",))
    async def get(self) -> None:
        self.respond(Liveness(status="ok"))


class ReadyzHandler(BaseHandler):
    access = PUBLIC

    @endpoint(
        "The process can serve: database reachable, keys loaded",
        response=Readiness,
        tags=("operations",),
    )
    async def get(self) -> None:
        checks = await self.ctx.readiness.check()
        ready = all(checks.values())
        if not ready:
            self.set_header("Retry-After", "5")
        self.respond(
            Readiness(status="ready" if ready else "unavailable", checks=checks),
            status=200 if ready else 503,
        )


class OpenAPIHandler(BaseHandler):
    access = PUBLIC

    async def get(self) -> None:
        factory = self.ctx.openapi_factory
        document = factory() if factory is not None else {}
        self.respond(document)


class ApiDocsHandler(BaseHandler):
    """A page that renders /openapi.json for people, with no script from anywhere else."""

    access = PUBLIC

    async def get(self) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header(
            "Content-Security-Policy",
            "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'",
        )
        self.finish((STATIC_DIR / "apidocs.html").read_bytes())


class StaticHandler(BaseHandler):
    """The few static files the API page needs; names are fixed, never taken from the path."""

    access = PUBLIC
    FILES: ClassVar[dict[str, str]] = {"apidocs.js": "text/javascript", "apidocs.css": "text/css"}

    async def get(self, name: str) -> None:
        media_type = self.FILES.get(name)
        if media_type is None:
            self.send_error(404)
            return
        self.set_header("Content-Type", f"{media_type}; charset=utf-8")
        self.set_header("Cache-Control", "public, max-age=3600")
        self.finish((STATIC_DIR / name).read_bytes())


routes = [
    (r"/healthz", HealthzHandler),
    (r"/readyz", ReadyzHandler),
    (r"/openapi.json", OpenAPIHandler),
    (r"/docs", ApiDocsHandler),
    (r"/static/(?P<name>[A-Za-z0-9_.-]+)", StaticHandler),
]
