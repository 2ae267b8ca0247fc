"""What rests in the database and the logs: ciphertext only, bound to its place; photos too."""

from __future__ import annotations

import logging

import bson
import pytest
from bson import ObjectId
from tornado.simple_httpclient import HTTPStreamClosedError

from models.policy import Role
from tests.subject_factories import subject_body

NAME, PHONE, ADDRESS = "欧阳秘密", "13987654321", "温州市鹿城区保密路77号"
NOTE = "因盗窃罪被判处缓刑，社区矫正期间表现良好"
PHOTO_MARKER = b"PHOTO-PLAINTEXT-MARKER-0123456789"
PNG = b"\x89PNG\r\n\x1a\n" + PHOTO_MARKER * 10_000  # about 330 KB: several sealed records


@pytest.fixture
async def officer(tree, make_staff):
    account = await make_staff(Role.STATION_OFFICER, tree.station)
    account.token = await make_staff.token_for(account)
    return account


async def dump_database(store) -> bytes:
    """Every document of every collection, GridFS chunks included, as raw BSON."""
    parts = []
    for name in await store.database.list_collection_names():
        async for doc in store.database[name].find({}):
            parts.append(bson.encode(doc))
    return b"".join(parts)


async def test_nothing_personal_rests_in_plaintext(fetch, store, tree, officer, caplog):
    body = subject_body(tree.station.id, name=NAME, phone=PHONE, address=ADDRESS)
    with caplog.at_level(logging.DEBUG):
        created = await fetch("/api/v1/subjects", "POST", json_body=body, token=officer.token)
        sid = created.json["id"]
        await fetch(
            f"/api/v1/subjects/{sid}/notes", "POST", json_body={"text": NOTE}, token=officer.token
        )
        photo = await fetch(
            f"/api/v1/subjects/{sid}/photo",
            "PUT",
            body=PNG,
            headers={"Content-Type": "image/png"},
            token=officer.token,
        )
        assert photo.status == 201
        await fetch(
            "/api/v1/subjects/search",
            "POST",
            json_body={"id_number": body["id_number"]},
            token=officer.token,
        )
        read = await fetch(f"/api/v1/subjects/{sid}", token=officer.token)
    assert read.json["name"] == NAME  # the API still answers in the clear, to those allowed
    raw = await dump_database(store)
    assert (
        b"attachments" in raw or await store.database["attachments.chunks"].count_documents({}) > 0
    )
    secrets = [NAME, PHONE, ADDRESS, NOTE, body["id_number"], "盗窃", "保密路"]
    for secret in secrets:
        assert secret.encode("utf-8") not in raw, secret
    assert PHOTO_MARKER not in raw
    logged = "\n".join(f"{r.getMessage()} {getattr(r, 'fields', '')}" for r in caplog.records)
    for secret in secrets:
        assert secret not in logged, secret


async def test_the_photo_comes_back_exactly_and_is_checked_by_content(fetch, tree, officer):
    sid = (
        await fetch(
            "/api/v1/subjects", "POST", json_body=subject_body(tree.station.id), token=officer.token
        )
    ).json["id"]
    path = f"/api/v1/subjects/{sid}/photo"
    assert (await fetch(path, token=officer.token)).status == 404
    stored = await fetch(
        path, "PUT", body=PNG, headers={"Content-Type": "image/png"}, token=officer.token
    )
    assert stored.status == 201 and stored.json["size"] == len(PNG)
    back = await fetch(path, token=officer.token)
    assert back.status == 200
    assert back.headers["Content-Type"] == "image/png"
    assert back.body == PNG
    text = await fetch(
        path,
        "PUT",
        body=b"hello, not an image at all",
        headers={"Content-Type": "image/jpeg"},
        token=officer.token,
    )
    assert text.status == 415
    mislabelled = await fetch(
        path, "PUT", body=PNG, headers={"Content-Type": "image/jpeg"}, token=officer.token
    )
    assert mislabelled.status == 415
    pdf = await fetch(
        path,
        "PUT",
        body=b"%PDF-1.7",
        headers={"Content-Type": "application/pdf"},
        token=officer.token,
    )
    assert pdf.status == 415
    huge = await fetch(
        path,
        "PUT",
        body=b"\xff\xd8\xff" + b"\x00" * (6 << 20),
        headers={"Content-Type": "image/jpeg"},
        token=officer.token,
    )
    assert huge.status == 413
    assert (await fetch(path, token=officer.token)).body == PNG  # the refused ones changed nothing


async def test_a_ciphertext_moved_to_another_record_fails_loudly(
    fetch, store, tree, officer, caplog
):
    first = (
        await fetch(
            "/api/v1/subjects", "POST", json_body=subject_body(tree.station.id), token=officer.token
        )
    ).json
    second = (
        await fetch(
            "/api/v1/subjects",
            "POST",
            json_body=subject_body(tree.station.id, name="另一个"),
            token=officer.token,
        )
    ).json
    subjects = store.database["subjects"]
    donor = await subjects.find_one({"_id": ObjectId(second["id"])})
    await subjects.update_one(
        {"_id": ObjectId(first["id"])}, {"$set": {"enc.name": donor["enc"]["name"]}}
    )
    with caplog.at_level(logging.ERROR, logger="anbang.crypto"):
        answer = await fetch(f"/api/v1/subjects/{first['id']}", token=officer.token)
    assert answer.status == 500
    assert answer.error["code"] == "integrity_error"
    assert "integrity" in answer.error["message"]
    assert any(r.name == "anbang.crypto" for r in caplog.records)
    assert "另一个" not in answer.body.decode()
    # Moving a field within one record fails the same way.
    own = await subjects.find_one({"_id": ObjectId(second["id"])})
    await subjects.update_one(
        {"_id": ObjectId(second["id"])}, {"$set": {"enc.address": own["enc"]["name"]}}
    )
    assert (await fetch(f"/api/v1/subjects/{second['id']}", token=officer.token)).status == 500


async def test_a_tampered_photo_is_not_served(fetch, store, tree, officer):
    sid = (
        await fetch(
            "/api/v1/subjects", "POST", json_body=subject_body(tree.station.id), token=officer.token
        )
    ).json["id"]
    stored = await fetch(
        f"/api/v1/subjects/{sid}/photo",
        "PUT",
        body=PNG,
        headers={"Content-Type": "image/png"},
        token=officer.token,
    )
    chunks = store.database["attachments.chunks"]
    chunk = await chunks.find_one({"files_id": ObjectId(stored.json["attachment_id"]), "n": 1})
    data = bytearray(chunk["data"])
    data[100] ^= 0x01
    await chunks.update_one({"_id": chunk["_id"]}, {"$set": {"data": bytes(data)}})
    # The first records were sound and already sent: the transfer is cut, never completed.
    for _ in range(2):
        with pytest.raises(HTTPStreamClosedError):
            await fetch(f"/api/v1/subjects/{sid}/photo", token=officer.token)
    # The server itself is fine.
    assert (await fetch("/healthz")).status == 200


async def test_rotating_a_data_key_keeps_everything_sealed_with_it_readable(
    fetch, tree, officer, services
):
    from server.app import SYSTEM

    sid = (
        await fetch(
            "/api/v1/subjects", "POST", json_body=subject_body(tree.station.id), token=officer.token
        )
    ).json["id"]
    await fetch(
        f"/api/v1/subjects/{sid}/notes", "POST", json_body={"text": NOTE}, token=officer.token
    )
    await fetch(
        f"/api/v1/subjects/{sid}/photo",
        "PUT",
        body=PNG,
        headers={"Content-Type": "image/png"},
        token=officer.token,
    )
    program = await fetch(
        f"/api/v1/subjects/{sid}/programs",
        "POST",
        token=officer.token,
        json_body={
            "type": "community_corrections",
            "start_date": "2026-11-02",
            "end_date": "2027-11-01",
            "sentence_type": "probation",
            "prohibitions": ["不得进入娱乐场所"],
        },
    )
    assert program.status == 201
    new_key = await services.subjects.rotate_data_key(SYSTEM, sid)
    assert new_key.startswith(f"dek:{sid}:")
    notes = await fetch(f"/api/v1/subjects/{sid}/notes", token=officer.token)
    assert [n["text"] for n in notes.json["items"]] == [NOTE]
    photo = await fetch(f"/api/v1/subjects/{sid}/photo", token=officer.token)
    assert photo.body == PNG
    programs = await fetch(f"/api/v1/subjects/{sid}/programs", token=officer.token)
    assert programs.json["items"][0]["details"]["prohibitions"] == ["不得进入娱乐场所"]


async def test_a_method_the_photo_route_does_not_serve_is_refused_quietly(
    fetch, tree, officer, caplog
):
    # Tornado refuses such a method before `prepare`, where the upload's state was first set:
    # the connection's close then raised AttributeError outside any request.
    path = f"/api/v1/subjects/{ObjectId()}/photo"
    with caplog.at_level(logging.ERROR):
        for method in ("TRACE", "QUERY", "POST"):
            answer = await fetch(path, method, body=b"x", token=officer.token)
            assert answer.status == 405, method
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []
