"""The documents served on a person (宣告书, 决定书) in the mini-program: listed, downloaded as the
office's PDF, announced by a message; documents not served on them, and other people's, are not
there."""

from __future__ import annotations

import io

from pypdf import PdfReader

from models.audit import AuditContext
from models.policy import Role
from models.sanctions import SanctionKind
from server.app import SYSTEM
from tests.mp_support import enrol

CORRECTIONS = {
    "type": "community_corrections",
    "start_date": "2026-01-05",
    "end_date": "2028-01-04",
    "sentence_type": "probation",
}


async def decided(services, subject_id: str, kind: SanctionKind, accounts) -> str:
    view = await services.sanctions.propose(SYSTEM, subject_id, kind, "未按规定报告")
    for level in view.levels:
        ctx = AuditContext(accounts[level].identity, request_id="mp-documents")
        view = await services.sanctions.decide(ctx, view.id, True, "查实")
    return view.id


async def test_a_person_reads_and_downloads_the_documents_served_on_them(
    fetch, tree, make_staff, services, mp_clients
):
    station = await make_staff(Role.STATION_OFFICER, tree.station)
    county = await make_staff(Role.COUNTY_OFFICER, tree.county)
    station_token = await make_staff.token_for(station)
    county_token = await make_staff.token_for(county)
    accounts = {"station": station, "county": county}
    subject_id, client = await enrol(fetch, mp_clients, tree, station_token, CORRECTIONS, "doc")
    other_id, other = await enrol(fetch, mp_clients, tree, station_token, CORRECTIONS, "other")

    admonish = await decided(services, subject_id, SanctionKind.ADMONISH, accounts)
    revoke = await decided(services, subject_id, SanctionKind.REVOKE_REQUEST, accounts)
    served = await fetch(
        "/api/v1/documents",
        "POST",
        json_body={"kind": "admonish_decision", "record_id": admonish},
        token=county_token,
    )
    assert served.status == 201
    # A 建议书 goes to the court, not to the person: it is not theirs to read here.
    not_served = await fetch(
        "/api/v1/documents",
        "POST",
        json_body={"kind": "revoke_request", "record_id": revoke},
        token=county_token,
    )
    assert not_served.status == 201

    listed = await client.call("GET", "/mp/v1/documents")
    assert listed.status == 200
    [item] = listed.json["items"]
    assert item["title"] == "训诫决定书" and item["status_text"] == "有效"
    assert item["number"] == served.json["number"]
    pdf = await client.call("GET", item["pdf_path"])
    assert pdf.status == 200 and pdf.headers["Content-Type"] == "application/pdf"
    staff_pdf = await fetch(f"/api/v1/documents/{served.json['id']}/pdf", token=county_token)
    assert pdf.body == staff_pdf.body
    text = "\n".join(p.extract_text() for p in PdfReader(io.BytesIO(pdf.body)).pages)
    assert "训诫决定书" in text and served.json["number"] in text

    # Its arrival is a message in the person's inbox.
    messages = await client.call("GET", "/mp/v1/messages")
    assert any("训诫决定书" in m["body"] for m in messages.json["items"]), messages.json

    hidden = await client.call("GET", f"/mp/v1/documents/{not_served.json['id']}/pdf")
    assert hidden.status == 404
    assert (await other.call("GET", "/mp/v1/documents")).json["items"] == []
    stranger = await other.call("GET", f"/mp/v1/documents/{served.json['id']}/pdf")
    assert stranger.status == 404
    assert other_id != subject_id
