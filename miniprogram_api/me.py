"""What a person (or guardian) reads in the mini-program: their profile, tasks and messages
(decision notices among them), and marking a message read."""

from __future__ import annotations

import datetime as dt
from typing import Any

from pydantic import Field

from handlers.base import Out, RequestError, endpoint, path_id
from handlers.obligations import OccurrenceOut
from handlers.query import calendar_day, query, query_args
from miniprogram_api.base import MpHandler, Produced
from models.clock import LOCAL_TZ
from models.notifications import MessageView
from models.obligations import KIND_TITLES, OccurrenceView
from models.policy import MpRole


class MessageRef(Out):
    type: str = Field(
        description="What the message is about: leave_request, checkin, sanction, "
        "elocation_order, transfer, referral, program, counseling_session, document"
    )
    id: str


class MessageOut(Out):
    id: str
    kind: str | None = Field(
        default=None, description="The decision it tells of (`leave_approved` …); null: a reminder"
    )
    title: str = Field(description="Chinese")
    body: str = Field(description="Chinese")
    created_at: dt.datetime
    read_at: dt.datetime | None = None
    ref: MessageRef | None = None

    @classmethod
    def of(cls, doc: dict[str, Any]) -> MessageOut:
        return cls(
            id=str(doc["_id"]),
            title=doc["title"],
            body=doc["body"],
            created_at=doc["created_at"],
            read_at=doc.get("read_at"),
        )

    @classmethod
    def of_view(cls, view: MessageView) -> MessageOut:
        return cls(
            id=view.id,
            kind=view.kind,
            title=view.title,
            body=view.body,
            created_at=view.created_at,
            read_at=view.read_at,
            ref=MessageRef(**view.ref) if view.ref else None,
        )


class MessagesOut(Out):
    items: list[MessageOut]


MAX_TASK_DAYS = 62


class TaskOut(OccurrenceOut):
    title: str = Field(description="The obligation's name, for the person (Chinese)")
    window_start: dt.datetime = Field(description="Local time (Asia/Shanghai, `+08:00`)")
    window_end: dt.datetime = Field(description="Local time (Asia/Shanghai, `+08:00`), exclusive")

    @classmethod
    def of(cls, view: OccurrenceView) -> TaskOut:
        # The same instants, written as the person's clock reads them.
        return cls(
            **view.__dict__
            | {
                "title": KIND_TITLES.get(view.kind, "任务"),
                "window_start": view.window_start.astimezone(LOCAL_TZ),
                "window_end": view.window_end.astimezone(LOCAL_TZ),
            }
        )


class TaskList(Out):
    items: list[TaskOut]


class TasksHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "Own obligations (a guardian: the patient's) with windows and status, "
        "`?from=&to=` (default: today and the next 7 days, at most 62 days)",
        response=TaskList,
        errors=(401, 403, 422),
        tags=("mini-program",),
        summary_zh="本人的任务（签到、报到等）及时段和状态",
    )
    @query(
        calendar_day("from", "First day (default: today)"),
        calendar_day("to", f"Last day (default: 7 days after `from`; {MAX_TASK_DAYS} at most)"),
    )
    async def get(self) -> None:
        args = query_args(self)
        start = args["from"] or self.ctx.clock.now().astimezone(LOCAL_TZ).date()
        end = args["to"] or start + dt.timedelta(days=7)
        if (end - start).days > MAX_TASK_DAYS:
            raise RequestError(
                422,
                "validation_failed",
                "Ask for at most 62 days.",
                [{"field": "to", "message": f"最多查询{MAX_TASK_DAYS}天"}],
            )
        views = await self.ctx.obligations.for_subject(
            self.audit_context,
            str(self.identity.subject_id),
            start=start,
            end=end,
            status=None,
            kind=None,
        )
        self.respond(TaskList(items=[TaskOut.of(v) for v in views]))


class MessagesHandler(MpHandler):
    access = "mp.self"

    @endpoint(
        "Notifications for the caller",
        response=MessagesOut,
        tags=("mini-program",),
        summary_zh="本人的消息通知",
    )
    async def get(self) -> None:
        views = await self.ctx.notifications.inbox(
            f"subject:{self.identity.subject_id}", _reader(self), limit=100
        )
        self.respond(MessagesOut(items=[MessageOut.of_view(v) for v in views]))


def _reader(handler: MpHandler) -> str:
    # A guardian reads only what the person's notices allowed a guardian to be told.
    return "guardian" if handler.identity.role == MpRole.GUARDIAN else "subject"


class MessageReadHandler(MpHandler):
    access = "mp.messages.read"

    @endpoint(
        "Mark one of the caller's messages read (again: unchanged); anyone else's 404",
        response=MessageOut,
        errors=(401, 403, 404),
        tags=("mini-program",),
        idempotency="optional",
        codes=(("not_found", 404, "未找到该消息（或不属于本人）"),),
        summary_zh="将本人的一条消息标记为已读",
    )
    async def post(self, message_id: str) -> None:
        async def produce() -> Produced:
            view = await self.ctx.notifications.mark_read(
                f"subject:{self.identity.subject_id}", _reader(self), message_id
            )
            return MessageOut.of_view(view), 200

        await self.respond_once(produce)


routes = [
    (r"/mp/v1/me/tasks", TasksHandler),
    (r"/mp/v1/messages", MessagesHandler),
    (rf"/mp/v1/messages/{path_id('message_id')}/read", MessageReadHandler),
]
