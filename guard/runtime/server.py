"""/livez, /readyz and /metrics over aiohttp."""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from guard.redact import redact
from guard.telemetry.health import Health
from guard.telemetry.metrics import Metrics


def _answer(ok: bool, reason: str) -> web.Response:
    body = {"status": "ok" if ok else "fail", "reason": redact(reason)}  # a Kafka error's text may quote anything
    return web.json_response(body, status=200 if ok else 503)


def health_app(health: Health, metrics: Metrics, app: web.Application | None = None) -> web.Application:
    """/livez, /readyz and /metrics, added to `app` (a new one by default)."""

    async def livez(_: web.Request) -> web.Response:
        ok, reason = health.live()
        return web.json_response(
            {"status": "ok" if ok else "fail", "reason": redact(reason)}, status=200 if ok else 503
        )

    async def readyz(_: web.Request) -> web.Response:
        ok, reason = health.ready()
        body = {"status": "ok" if ok else "fail", "reason": redact(reason), "warnings": health.warnings()}
        return web.json_response(body, status=200 if ok else 503)

    async def prometheus(_: web.Request) -> web.Response:
        return web.Response(body=generate_latest(metrics.registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    app = web.Application() if app is None else app
    app.router.add_get("/livez", livez)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", prometheus)
    return app


class HealthServer:
    def __init__(self, health: Health, metrics: Metrics, host: str, port: int) -> None:
        self._runner = web.AppRunner(health_app(health, metrics), access_log=None)
        self._host, self._port = host, port
        self.port = port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(self._runner, self._host, self._port)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]

    async def stop(self) -> None:
        await self._runner.cleanup()
