"""Photo uploads from the mini-program (a check-in's photo): JPEG or PNG, checked by content."""

from __future__ import annotations

from tornado.httputil import HTTPFile, HTTPInputError, parse_body_arguments

from handlers.base import Out, RequestError, endpoint
from miniprogram_api.base import MpHandler
from models.uploads import MAX_UPLOAD_BYTES


class UploadOut(Out):
    upload_id: str


class UploadsHandler(MpHandler):
    access = "uploads.create"
    # The file plus the multipart envelope around it.
    max_body_bytes = MAX_UPLOAD_BYTES + 64 * 1024

    @endpoint(
        "Upload a photo (multipart field `file`, JPEG or PNG, at most 5 MiB); stored encrypted",
        body_media={
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {
                        "file": {
                            "type": "string",
                            "format": "binary",
                            "description": "The photo, recognised by its content",
                        }
                    },
                    "required": ["file"],
                },
                "encoding": {"file": {"contentType": "image/jpeg, image/png"}},
            }
        },
        response=UploadOut,
        status=201,
        errors=(400, 401, 403, 413, 415, 422),
        tags=("mini-program",),
        idempotency="optional",
        codes=(("not_a_subject", 403, "只有已绑定的本人可以上传，或档案已关闭"),),
        summary_zh="上传照片（JPEG 或 PNG，不超过 5 MiB）",
    )
    async def post(self) -> None:
        content_type = self.request.headers.get("Content-Type", "")
        if not content_type.lower().startswith("multipart/form-data"):
            raise RequestError(415, "unsupported_media_type", "Send the photo as multipart.")
        arguments: dict[str, list[bytes]] = {}
        files: dict[str, list[HTTPFile]] = {}
        try:
            parse_body_arguments(content_type, self.raw_body(), arguments, files)
        except HTTPInputError:
            # No boundary, no final boundary, a part without headers: the client's fault.
            raise RequestError(400, "bad_request", "The multipart body is malformed.") from None
        uploaded = files.get("file") or []
        if len(uploaded) != 1:
            raise RequestError(
                422,
                "validation_failed",
                "Send one file in the field `file`.",
                [{"field": "file", "message": "请选择一张照片"}],
            )
        data = uploaded[0].body
        if len(data) > MAX_UPLOAD_BYTES:
            raise RequestError(413, "body_too_large", "The photo is too large.")

        async def produce() -> tuple[UploadOut, int]:
            upload_id = await self.ctx.uploads.store(self.audit_context, data)
            return UploadOut(upload_id=upload_id), 201

        await self.respond_once(produce, content=data)


routes = [(r"/mp/v1/uploads", UploadsHandler)]
