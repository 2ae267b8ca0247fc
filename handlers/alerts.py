"""Alert endpoints: the alerts in the caller's scope, and acknowledging one."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import BaseModel

from handlers.base import BaseHandler, RequestError, endpoint
from models.alerts import Alert


class AlertOut(BaseModel):
    id: str
    kind: str
    org_id: str
    status: str
    subject_id: str | None
    to_user_id: str | None
    created_at: dt.datetime
    details: dict[str, Any]

    @classmethod
    def of(cls, alert: Alert) -> AlertOut:
        return cls(**alert.__dict__)


class AlertList(BaseModel):
    items: list[AlertOut]


class AlertsHandler(BaseHandler):
    access = "alerts.read"

    @endpoint(
        "Alerts in the caller's scope (`?status=open&mine=1`)", response=AlertList, tags=("alerts",)
    )
    async def get(self) -> None:
        status = self.get_query_argument("status", None)
        if status not in (None, "open", "acknowledged"):
            raise RequestError(
                422,
                "validation_failed",
                "Invalid query.",
                [{"field": "status", "message": "open or acknowledged"}],
            )
        mine = self.get_query_argument("mine", "0") == "1"
        alerts = await self.ctx.alerts.list(self.identity, status=status, mine=mine)
        self.respond(AlertList(items=[AlertOut.of(a) for a in alerts]))


class AlertAckHandler(BaseHandler):
    access = "alerts.read"

    @endpoint("Acknowledge an alert", response=AlertOut, errors=(404,), tags=("alerts",))
    async def post(self, alert_id: str) -> None:
        self.respond(AlertOut.of(await self.ctx.alerts.acknowledge(self.audit_context, alert_id)))


routes = [
    (r"/api/v1/alerts", AlertsHandler),
    (r"/api/v1/alerts/(?P<alert_id>[^/]+)/ack", AlertAckHandler),
]
