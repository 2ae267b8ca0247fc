"""The console's check-in oversight: the review queue (the photo beside the file photo, a map of
the area, the point and its accuracy, the flags explained), the reviews decided today by name,
a person's check-in history, and the photos relayed from the API, never cached."""

from __future__ import annotations

import asyncio
import urllib.parse
from typing import Any, ClassVar

import tornado.web
from tornado.concurrent import Future

from handlers.console.base import SessionExpired, path_id
from handlers.console.inprocess import LocalExchange
from handlers.console.pages import DecisionForms, Page

# The queue shows this many items with their maps; the rest wait for the next visit.
QUEUE_SHOWN = 20
HISTORY_PAGE = 20


class ReviewPage(DecisionForms):
    template = "review.html"

    async def get(self) -> None:
        await self.show()

    async def load(self, **_: str) -> dict[str, Any]:
        # The same queue whichever check-in's form came back (the review's address names it).
        queue = await self.api_ok("GET", f"/api/v1/checkins/review-queue?limit={QUEUE_SHOWN}")
        # Each item's detail and today's decisions, asked for at once (database waits overlap).
        answers = await asyncio.gather(
            *(self.api("GET", f"/api/v1/checkins/{item['id']}") for item in queue["items"]),
            self.api("GET", "/api/v1/checkins/decided"),
        )
        decided = answers[-1]
        details = {a.body["id"]: a.body for a in answers[:-1] if a.ok}
        return {
            "items": queue["items"],
            "details": details,
            "decided": decided.body["items"] if decided.ok else None,
        }


class ReviewDecision(ReviewPage):
    async def post(self, checkin_id: str) -> None:
        await self.decide(
            checkin_id,
            f"/api/v1/checkins/{checkin_id}/review",
            verb="accept",
            back="/console/checkins",
            missing="请填写审核理由",
        )


class HistoryPage(Page):
    """A person's check-ins, a page at a time, each on a small map."""

    async def get(self, subject_id: str) -> None:
        subject = await self.api_ok("GET", f"/api/v1/subjects/{subject_id}")
        query = {"limit": str(HISTORY_PAGE)}
        cursor = self.get_query_argument("cursor", "")
        if cursor:
            query["cursor"] = cursor
        history = await self.api_ok(
            "GET", f"/api/v1/subjects/{subject_id}/checkins?" + urllib.parse.urlencode(query)
        )
        self.render(
            "checkin_history.html",
            subject=subject,
            history=history["items"],
            history_next=history["next_cursor"],
            first_page=not cursor,
        )


class PhotoRelay(Page):
    """A photo from the API, relayed as it streams: never cached, never framed, and 404 for
    whoever the API refuses (it answers 404 whatever the reason)."""

    MEDIA: ClassVar[frozenset[str]] = frozenset({"image/jpeg", "image/png"})

    async def relay_photo(self, api_path: str) -> None:
        refused = False

        def relay(answer: LocalExchange, chunk: bytes) -> Future[None]:
            nonlocal refused
            media = answer.headers.get("Content-Type", "")
            if refused or media not in self.MEDIA:
                # Only an image is relayed: anything else is dropped and answered 404.
                refused = True
                dropped: Future[None] = Future()
                dropped.set_result(None)
                return dropped
            if not self._headers_written:
                self.set_header("Content-Type", media)
                self.set_header("Content-Security-Policy", "default-src 'none'")
                self.set_header("Pragma", "no-cache")
            self.write(chunk)
            return self.flush()

        exchange = await self.call_api(
            "GET", api_path, {"Authorization": f"Bearer {self.token}"}, relay=relay
        )
        if exchange.status == 401:
            raise SessionExpired()
        if exchange.cut and self._headers_written:
            # Broken midway: the browser sees a broken transfer, never a whole-looking image.
            self.request.connection.close()  # type: ignore[union-attr]
            return
        if exchange.status != 200 or exchange.cut or refused or not self._headers_written:
            raise tornado.web.HTTPError(404)
        self.finish()


class CheckinPhoto(PhotoRelay):
    async def get(self, checkin_id: str) -> None:
        await self.relay_photo(f"/api/v1/checkins/{checkin_id}/photo")


class SubjectPhoto(PhotoRelay):
    async def get(self, subject_id: str) -> None:
        await self.relay_photo(f"/api/v1/subjects/{subject_id}/photo")


routes = [
    (r"/console/checkins", ReviewPage),
    (rf"/console/checkins/{path_id('checkin_id')}/review", ReviewDecision),
    (rf"/console/checkins/{path_id('checkin_id')}/photo", CheckinPhoto),
    (rf"/console/subjects/{path_id('subject_id')}/photo", SubjectPhoto),
    (rf"/console/subjects/{path_id('subject_id')}/checkins", HistoryPage),
]
