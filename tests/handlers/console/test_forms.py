"""The console's forms (`FormPage`, handlers/console/pages.py) over plain HTTP: one refused
before the API is asked comes back as typed under 422, one the API refuses comes back under the
API's status with its words in Chinese, one it accepts goes on to the next page; a page with a
form per record keeps the words beside that record's form."""

from __future__ import annotations

import urllib.parse
from dataclasses import dataclass

from tornado.httpclient import AsyncHTTPClient

from handlers.console.base import ERRORS_ZH, SESSION_COOKIE

# Tornado's XSRF check compares the form's `_xsrf` with the cookie's: any token, sent as both.
XSRF = "0123456789abcdef0123456789abcdef"
# An id no record has.
NOBODY = "6b0000000000000000000000"


@dataclass
class Answer:
    status: int
    body: str
    location: str


async def send(api, token: str, path: str, form: dict[str, str] | None = None) -> Answer:
    """The page at `path`, or the form at `path` posted with `form`, as the officer's browser."""
    client = AsyncHTTPClient(force_instance=True)
    try:
        answer = await client.fetch(
            api.base_url + path,
            method="GET" if form is None else "POST",
            body=None if form is None else urllib.parse.urlencode({**form, "_xsrf": XSRF}),
            headers={"Cookie": f"{SESSION_COOKIE}={token}; _xsrf={XSRF}"},
            follow_redirects=False,
            raise_error=False,
            request_timeout=120,
        )
    finally:
        client.close()
    body = (answer.body or b"").decode("utf-8", "replace")
    return Answer(answer.code, body, answer.headers.get("Location", ""))


async def test_a_note_the_api_takes_goes_back_to_the_file_and_an_empty_one_is_named(
    api, supervised
):
    token = await supervised.officer_token()
    path = f"/console/subjects/{supervised.subject_id}"
    empty = await send(api, token, path, {"text": "  "})
    assert empty.status == 422
    assert "请填写记录内容" in empty.body
    saved = await send(api, token, path, {"text": "电话回访,情况稳定"})
    assert (saved.status, saved.location) == (302, path)


async def test_a_transfer_missing_its_fields_comes_back_as_typed_under_422(api, supervised):
    token = await supervised.officer_token()
    path = f"/console/subjects/{supervised.subject_id}/transfers/new"
    shown = await send(api, token, path, {"to_org_id": "", "reason": "随家人迁居杭州"})
    assert shown.status == 422
    assert "未提交:请按提示填写。" in shown.body
    assert "请选择变更后的司法所" in shown.body
    assert "随家人迁居杭州" in shown.body


async def test_a_case_file_missing_its_fields_names_each_one(api, supervised):
    token = await supervised.officer_token()
    shown = await send(api, token, "/console/subjects/new", {"name": "张三", "id_type": "resident"})
    assert shown.status == 422
    assert "证件号码必须填写" in shown.body
    assert "张三" in shown.body


async def test_a_step_the_api_refuses_stays_on_its_form_under_the_apis_status(
    api, supervised, fetch
):
    token = await supervised.officer_token()
    programs = await fetch(f"/api/v1/subjects/{supervised.subject_id}/programs", token=token)
    program_id = programs.json["items"][0]["id"]
    path = f"/console/programs/{program_id}"
    unconfirmed = await send(api, token, f"{path}/terminate", {"kind": "completed"})
    assert unconfirmed.status == 422
    assert "未保存:请确认。" in unconfirmed.body
    intake = await send(api, token, f"{path}/intake", {"date": "2026-11-02"})
    assert (intake.status, intake.location) == (302, f"{path}?done=intake")
    # The program is under way now: its intake cannot be recorded again.
    again = await send(api, token, f"{path}/intake", {"date": "2026-11-02"})
    assert again.status == 409
    assert "该记录的状态已变化,此步骤不能办理,请刷新后查看。" in again.body


async def test_a_month_the_api_refuses_is_named_beside_its_field(api, supervised, tree):
    token = await supervised.officer_token()
    shown = await send(api, token, "/console/reports", {"org_id": tree.station.id, "month": "11"})
    assert shown.status == 422
    assert "请按 YYYY-MM 填写月份" in shown.body


async def test_a_decision_without_a_comment_is_told_beside_its_own_record(api, supervised, fetch):
    proposed = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/sanctions",
        "POST",
        token=await supervised.officer_token(),
        json_body={"kind": "warn", "reason": "未经批准离开县域"},
    )
    assert proposed.status == 201, proposed.body
    deciding = supervised.officer if proposed.json["next_level"] == "station" else supervised.county
    token = await supervised.make_staff.token_for(deciding)
    path = f"/console/sanctions/{proposed.json['id']}/decision"
    unexplained = await send(api, token, path, {"approve": "1", "comment": " "})
    assert unexplained.status == 422
    assert "请填写审批意见" in unexplained.body
    decided = await send(api, token, path, {"approve": "1", "comment": "事实清楚,同意"})
    assert (decided.status, decided.location) == (302, "/console/sanctions")


async def test_a_refused_acknowledgement_is_told_above_the_alerts(api, supervised):
    token = await supervised.officer_token()
    shown = await send(api, token, f"/console/alerts/{NOBODY}/ack", {})
    assert shown.status == 404
    # The alerts page itself, with the refusal above its list.
    assert "未处理预警" in shown.body
    assert f'<p class="card warn" id="alert-error">{ERRORS_ZH["not_found"]}</p>' in shown.body


async def test_a_referral_declined_without_a_reason_comes_back_to_the_board(api, supervised):
    token = await supervised.officer_token()
    shown = await send(api, token, f"/console/assistance/transition/{NOBODY}", {"to": "declined"})
    assert shown.status == 422
    assert "请填写原因。" in shown.body


async def test_a_document_for_an_undecided_record_is_told_above_the_documents(
    api, supervised, fetch
):
    token = await supervised.officer_token()
    proposed = await fetch(
        f"/api/v1/subjects/{supervised.subject_id}/sanctions",
        "POST",
        token=token,
        json_body={"kind": "warn", "reason": "未经批准离开县域"},
    )
    assert proposed.status == 201, proposed.body
    path = f"/console/subjects/{supervised.subject_id}/documents"
    form = {"kind": "warning_decision", "record_id": proposed.json["id"]}
    shown = await send(api, token, path, form)
    assert shown.status == 409
    assert '<p class="error" role="alert" id="document-error">该记录尚未作出决定' in shown.body
    # A record out of reach is the error page, not the form's.
    unknown = await send(api, token, path, {**form, "record_id": NOBODY})
    assert unknown.status == 404
    assert "document-error" not in unknown.body
    assert ERRORS_ZH["not_found"] in unknown.body
