"""`/wechat/push`: WeChat's message push, signed (and in safe mode encrypted) as WeChat does it."""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import hashlib
import json
import uuid
from typing import Any
from urllib.parse import urlencode

import bson
import pytest
import xmltodict
from wechatpy.crypto import WeChatCrypto

from models.codec import FieldCodec
from models.errors import Forbidden
from models.store import DatabaseSettings, Store
from models.wechat_push import PUSH_NONCES, PushQuery, PushSettings, WeChatPushService

TOKEN = "anbang-push-token-for-tests"
AES_KEY = base64.b64encode(hashlib.sha256(b"anbang push tests").digest()).decode().rstrip("=")
OPENID = "oX1b2C3d4E5f6G7h8I9j0KlMnOpQ"
TEMPLATE = "tplCheckinReminder-0001_abcdefghijklmnopqrs"
OTHER_TEMPLATE = "tplLeaveDecision-0002_abcdefghijklmnopqrst"
PUSH = "/wechat/push"
POPUP = "subscribe_msg_popup_event"
CHANGE = "subscribe_msg_change_event"
SENT = "subscribe_msg_sent_event"
CONTAINERS = {
    POPUP: "SubscribeMsgPopupEvent",
    CHANGE: "SubscribeMsgChangeEvent",
    SENT: "SubscribeMsgSentEvent",
}


@pytest.fixture
def push_token() -> str:
    return TOKEN


@pytest.fixture
def push_aes_key() -> str:
    """Plaintext mode unless a test parametrizes an EncodingAESKey (safe mode)."""
    return ""


@pytest.fixture
def config(config, push_token: str, push_aes_key: str):
    return dataclasses.replace(
        config, wechat_push_token=push_token, wechat_push_aes_key=push_aes_key
    )


# --- what WeChat's servers send -----------------------------------------------------------------


def sha1_of_sorted(*parts: str) -> str:
    return hashlib.sha1("".join(sorted(parts)).encode()).hexdigest()  # noqa: S324 - WeChat's


def signed(
    clock, *, token: str = TOKEN, skew: dt.timedelta = dt.timedelta(0), nonce: str | None = None
) -> dict[str, str]:
    """The query WeChat adds to every push: timestamp, nonce and their signature."""
    timestamp = str(int((clock.now() + skew).timestamp()))
    nonce = nonce or str(uuid.uuid4().int % 10**10)
    return {
        "signature": sha1_of_sorted(token, timestamp, nonce),
        "timestamp": timestamp,
        "nonce": nonce,
    }


def event_doc(event: str, entries: list[dict[str, Any]], openid: str = OPENID) -> dict[str, Any]:
    return {
        "ToUserName": "gh_0123456789ab",
        "FromUserName": openid,
        "CreateTime": 1_700_000_000,
        "MsgType": "event",
        "Event": event,
        "List": entries,
    }


def as_json(doc: dict[str, Any]) -> str:
    # WeChat sends one entry as an object rather than a one-element list.
    entries = doc["List"]
    return json.dumps({**doc, "List": entries[0] if len(entries) == 1 else entries})


def as_xml(doc: dict[str, Any]) -> str:
    fields = {k: v for k, v in doc.items() if k != "List"}
    fields[CONTAINERS[doc["Event"]]] = {"List": doc["List"]}
    return xmltodict.unparse({"xml": fields}, full_document=False)


def body_for(data_format: str, doc: dict[str, Any]) -> tuple[str, str]:
    if data_format == "json":
        return as_json(doc), "application/json"
    return as_xml(doc), "text/xml"


def popup(*choices: tuple[str, str]) -> dict[str, Any]:
    return event_doc(
        POPUP,
        [{"TemplateId": t, "SubscribeStatusString": s, "PopupScene": "0"} for t, s in choices],
    )


def encrypted(
    plain: str, query: dict[str, str], appid: str, data_format: str, *, key: str = AES_KEY
) -> tuple[str, str]:
    """Safe mode with wechatpy's crypto: the envelope to post and its msg_signature."""
    sealed = xmltodict.parse(
        WeChatCrypto(TOKEN, key, appid).encrypt_message(plain, query["nonce"], query["timestamp"])
    )["xml"]
    envelope = {"ToUserName": "gh_0123456789ab", "Encrypt": sealed["Encrypt"]}
    if data_format == "json":
        return json.dumps(envelope), sealed["MsgSignature"]
    return xmltodict.unparse({"xml": envelope}, full_document=False), sealed["MsgSignature"]


async def post(fetch, query: dict[str, str], body: str, content_type: str = "text/xml"):
    return await fetch(
        f"{PUSH}?{urlencode(query)}", "POST", body=body, headers={"Content-Type": content_type}
    )


async def user_id_of(services, openid: str = OPENID) -> str:
    return await FieldCodec(services.vault).blind_index("openid", openid)


def accepted(answer) -> bool:
    return (
        answer.status == 200
        and answer.body == b"success"
        and answer.headers["Content-Type"].startswith("text/plain")
    )


# --- the URL check (GET) ------------------------------------------------------------------------


async def test_get_echoes_echostr_when_the_signature_is_valid(fetch, clock):
    query = {**signed(clock), "echostr": "7205135386529437714"}
    answer = await fetch(f"{PUSH}?{urlencode(query)}")
    assert answer.status == 200
    assert answer.body == b"7205135386529437714"
    assert answer.headers["Content-Type"].startswith("text/plain")


async def test_get_is_refused_without_a_valid_signature(fetch, clock):
    echostr = "7205135386529437714"
    unsigned = await fetch(f"{PUSH}?{urlencode({'echostr': echostr})}")
    wrong_token = {**signed(clock, token="someone-else"), "echostr": echostr}
    badly_signed = await fetch(f"{PUSH}?{urlencode(wrong_token)}")
    for answer in (unsigned, badly_signed):
        assert answer.status == 403
        assert answer.error["code"] == "bad_signature"
        assert echostr.encode() not in answer.body


async def test_a_used_url_check_cannot_be_replayed_as_a_push(fetch, clock, services):
    query = signed(clock)
    assert (await fetch(f"{PUSH}?{urlencode({**query, 'echostr': 'x1'})}")).status == 200
    body, content_type = body_for("xml", popup((TEMPLATE, "accept")))
    answer = await post(fetch, query, body, content_type)
    assert answer.status == 403
    assert answer.error["code"] == "replayed"
    assert (await services.consents.state(await user_id_of(services))).one_time == {}


@pytest.mark.parametrize("push_token", [""])
async def test_without_a_token_every_push_is_refused(fetch, clock, services):
    query = signed(clock, token="")
    check = await fetch(f"{PUSH}?{urlencode({**query, 'echostr': 'abc'})}")
    body, content_type = body_for("json", popup((TEMPLATE, "accept")))
    push = await post(fetch, signed(clock, token=""), body, content_type)
    for answer in (check, push):
        assert answer.status == 403
        assert answer.error["code"] == "push_disabled"
    assert (await services.consents.state(await user_id_of(services))).one_time == {}


# --- events (POST) ------------------------------------------------------------------------------


@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_a_popup_acceptance_allows_one_message(fetch, clock, services, store, data_format):
    body, content_type = body_for(data_format, popup((TEMPLATE, "accept")))
    answer = await post(fetch, signed(clock), body, content_type)
    assert accepted(answer), answer.body
    user_id = await user_id_of(services)
    state = await services.consents.state(user_id)
    assert state.one_time == {TEMPLATE: 1}
    assert state.refused == []
    entries = await store.collection("audit").find({"resource_id": user_id}).sort("_id").to_list()
    action = f"wechat_push.{POPUP}"
    assert [e["action"] for e in entries] == [action, f"{action}.outcome"]
    pending, outcome = entries
    assert (pending["outcome"], outcome["outcome"]) == ("pending", "ok")
    assert pending["actor_id"] == "wechat-push" and pending["role"] == "system"
    assert pending["details"]["granted"] == [TEMPLATE]
    assert pending["details"]["format"] == data_format


@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_a_popup_with_several_templates_accepts_and_refuses_each(
    fetch, clock, services, data_format
):
    body, content_type = body_for(
        data_format, popup((TEMPLATE, "accept"), (OTHER_TEMPLATE, "reject"))
    )
    assert accepted(await post(fetch, signed(clock), body, content_type))
    state = await services.consents.state(await user_id_of(services))
    assert state.one_time == {TEMPLATE: 1}
    assert state.refused == [OTHER_TEMPLATE]


@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_a_popup_rejection_refuses_the_template(fetch, clock, services, data_format):
    for status in ("accept", "reject"):
        body, content_type = body_for(data_format, popup((TEMPLATE, status)))
        assert accepted(await post(fetch, signed(clock), body, content_type))
    state = await services.consents.state(await user_id_of(services))
    assert state.one_time == {}
    assert state.refused == [TEMPLATE]


@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_turning_a_template_off_in_settings_refuses_it(fetch, clock, services, data_format):
    body, content_type = body_for(data_format, popup((TEMPLATE, "accept")))
    assert accepted(await post(fetch, signed(clock), body, content_type))
    change = event_doc(CHANGE, [{"TemplateId": TEMPLATE, "SubscribeStatusString": "reject"}])
    body, content_type = body_for(data_format, change)
    assert accepted(await post(fetch, signed(clock), body, content_type))
    state = await services.consents.state(await user_id_of(services))
    assert state.one_time == {}
    assert state.refused == [TEMPLATE]


async def test_turning_a_template_on_in_settings_grants_no_message(fetch, clock, services, store):
    change = event_doc(CHANGE, [{"TemplateId": TEMPLATE, "SubscribeStatusString": "accept"}])
    body, content_type = body_for("json", change)
    assert accepted(await post(fetch, signed(clock), body, content_type))
    user_id = await user_id_of(services)
    assert (await services.consents.state(user_id)).one_time == {}
    entry = await store.collection("audit").find_one({"action": f"wechat_push.{CHANGE}"})
    assert entry["resource_id"] == user_id
    assert entry["details"]["accepted"] == [TEMPLATE]
    assert entry["details"]["granted"] == []


@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_delivery_reports_are_recorded_and_a_user_block_refuses(
    fetch, clock, services, store, data_format
):
    body, content_type = body_for(
        data_format, popup((TEMPLATE, "accept"), (OTHER_TEMPLATE, "accept"))
    )
    assert accepted(await post(fetch, signed(clock), body, content_type))
    delivered = {"MsgID": "1700000000123", "ErrorCode": "0", "ErrorStatus": "success"}
    blocked = {"MsgID": "1700000000124", "ErrorCode": "20001", "ErrorStatus": "failed:user block"}
    for template, report in ((TEMPLATE, delivered), (OTHER_TEMPLATE, blocked)):
        body, content_type = body_for(
            data_format, event_doc(SENT, [{"TemplateId": template, **report}])
        )
        assert accepted(await post(fetch, signed(clock), body, content_type))
    state = await services.consents.state(await user_id_of(services))
    assert state.one_time == {TEMPLATE: 1}
    assert state.refused == [OTHER_TEMPLATE]
    reports = await store.collection("audit").find({"action": f"wechat_push.{SENT}"}).to_list()
    statuses = [d["status"] for e in reports for d in e["details"].get("deliveries", [])]
    assert "success" in statuses and "failed:user block" in statuses


async def test_other_messages_are_acknowledged_without_their_content(fetch, clock, store):
    text = {
        "ToUserName": "gh_0123456789ab",
        "FromUserName": OPENID,
        "CreateTime": 1_700_000_000,
        "MsgType": "text",
        "Content": "我的地址是五马街1号",
        "MsgId": 1234567890,
    }
    assert accepted(await post(fetch, signed(clock), json.dumps(text), "application/json"))
    entry = await store.collection("audit").find_one({"action": "wechat_push.text"})
    assert entry is not None
    assert "五马街" not in json.dumps(entry, default=str, ensure_ascii=False)


# --- refusals -----------------------------------------------------------------------------------


async def test_an_unsigned_push_is_refused_and_changes_nothing(fetch, clock, services, store):
    body, content_type = body_for("xml", popup((TEMPLATE, "accept")))
    unsigned = await post(fetch, {}, body, content_type)
    forged = await post(fetch, signed(clock, token="guessed-token"), body, content_type)
    unsigned_with_time = {k: v for k, v in signed(clock).items() if k != "signature"}
    half_signed = await post(fetch, unsigned_with_time, body, content_type)
    for answer in (unsigned, forged, half_signed):
        assert answer.status == 403
        assert answer.error["code"] == "bad_signature"
    assert (await services.consents.state(await user_id_of(services))).one_time == {}
    assert (
        await store.collection("audit").count_documents({"action": {"$regex": "^wechat_push"}}) == 0
    )
    assert await store.collection(PUSH_NONCES).count_documents({}) == 0


@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_a_replayed_push_is_refused_and_counted_once(fetch, clock, services, data_format):
    query = signed(clock)
    body, content_type = body_for(data_format, popup((TEMPLATE, "accept")))
    assert accepted(await post(fetch, query, body, content_type))
    replay = await post(fetch, query, body, content_type)
    assert replay.status == 403
    assert replay.error["code"] == "replayed"
    # Another body under the captured signature fares no better (plaintext bodies are unsigned).
    other, _ = body_for(data_format, popup((OTHER_TEMPLATE, "accept")))
    assert (await post(fetch, query, other, content_type)).status == 403
    state = await services.consents.state(await user_id_of(services))
    assert state.one_time == {TEMPLATE: 1}


async def test_a_replay_reaching_another_process_is_refused(fetch, clock, services, config):
    query = signed(clock)
    body, content_type = body_for("xml", popup((TEMPLATE, "accept")))
    assert accepted(await post(fetch, query, body, content_type))
    # A second process: its own connection and service, the same database.
    other = Store.connect(
        DatabaseSettings(uri=config.database_uri, name=config.db_name, production=False)
    )
    try:
        service = WeChatPushService(
            other, clock, services.audit, FieldCodec(services.vault), services.consents
        )
        with pytest.raises(Forbidden) as refused:
            await service.receive(PushSettings(TOKEN), PushQuery(**query), body.encode())
        assert refused.value.code == "replayed"
    finally:
        await other.close()
    assert (await services.consents.state(await user_id_of(services))).one_time == {TEMPLATE: 1}


@pytest.mark.parametrize(
    ("seconds", "outcome"),
    [(-301, 403), (-300, 200), (300, 200), (301, 403), (-3600, 403), (86_400, 403)],
)
async def test_the_timestamp_must_be_within_five_minutes(fetch, clock, services, seconds, outcome):
    body, content_type = body_for("json", popup((TEMPLATE, "accept")))
    answer = await post(
        fetch, signed(clock, skew=dt.timedelta(seconds=seconds)), body, content_type
    )
    assert answer.status == outcome
    expected = {TEMPLATE: 1} if outcome == 200 else {}
    assert (await services.consents.state(await user_id_of(services))).one_time == expected
    if outcome == 403:
        assert answer.error["code"] == "stale_timestamp"


async def test_nonces_are_kept_with_a_unique_id_and_a_ttl(fetch, clock, store):
    body, content_type = body_for("xml", popup((TEMPLATE, "accept")))
    query = signed(clock)
    assert accepted(await post(fetch, query, body, content_type))
    nonces = store.collection(PUSH_NONCES)
    stored = await nonces.find_one({})
    assert stored["_id"] == f"{query['timestamp']}:{query['nonce']}"
    assert stored["expires_at"] > clock.now() + dt.timedelta(minutes=5)
    ttl = [
        index
        for index in (await nonces.index_information()).values()
        if index.get("expireAfterSeconds") == 0
    ]
    assert [index["key"] for index in ttl] == [[("expires_at", 1)]]


@pytest.mark.parametrize(
    "body",
    [
        "not a push",
        "<xml><MsgType>event",
        '{"MsgType": "event", "Event": "subscribe_msg_popup_event", "List": []}',
        '{"MsgType": "event", "Event": "subscribe_msg_popup_event", '
        '"List": [{"TemplateId": "t", "SubscribeStatusString": "accept"}]}',
        '<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        "<xml><MsgType>&e;</MsgType></xml>",
    ],
)
async def test_a_malformed_push_is_refused_without_using_up_its_nonce(fetch, clock, store, body):
    answer = await post(fetch, signed(clock), body)
    assert answer.status == 400
    assert answer.error["code"] == "malformed_push"
    assert await store.collection(PUSH_NONCES).count_documents({}) == 0


# --- safe mode ----------------------------------------------------------------------------------


@pytest.mark.parametrize("push_aes_key", [AES_KEY])
@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_safe_mode_decrypts_and_accepts(fetch, clock, services, api, store, data_format):
    appid = api.runtime.context.wechat_appid
    plain, content_type = body_for(data_format, popup((TEMPLATE, "accept")))
    query = signed(clock)
    body, msg_signature = encrypted(plain, query, appid, data_format)
    sealed = {**query, "encrypt_type": "aes", "msg_signature": msg_signature}
    assert accepted(await post(fetch, sealed, body, content_type))
    assert (await services.consents.state(await user_id_of(services))).one_time == {TEMPLATE: 1}
    entry = await store.collection("audit").find_one({"action": f"wechat_push.{POPUP}"})
    assert entry["details"]["encrypted"] is True
    replay = await post(fetch, sealed, body, content_type)
    assert (replay.status, replay.error["code"]) == (403, "replayed")


@pytest.mark.parametrize("push_aes_key", [AES_KEY])
async def test_safe_mode_refuses_a_bad_msg_signature(fetch, clock, services, api):
    appid = api.runtime.context.wechat_appid
    plain, content_type = body_for("xml", popup((TEMPLATE, "accept")))
    query = signed(clock)
    body, msg_signature = encrypted(plain, query, appid, "xml")
    wrong = {**query, "encrypt_type": "aes", "msg_signature": sha1_of_sorted("x", "y")}
    missing = {**query, "encrypt_type": "aes"}
    # Another ciphertext (another event) under the first one's msg_signature.
    other_plain, _ = body_for("xml", popup((OTHER_TEMPLATE, "accept")))
    other_body, _ = encrypted(other_plain, query, appid, "xml")
    swapped = {**query, "encrypt_type": "aes", "msg_signature": msg_signature}
    for sealed, sent in ((wrong, body), (missing, body), (swapped, other_body)):
        answer = await post(fetch, sealed, sent, content_type)
        assert answer.status == 403
        assert answer.error["code"] == "bad_signature"
    state = await services.consents.state(await user_id_of(services))
    assert state.one_time == {}
    # Nothing used the nonce up: the genuine push still goes through.
    assert accepted(await post(fetch, swapped, body, content_type))


@pytest.mark.parametrize("push_aes_key", [AES_KEY])
@pytest.mark.parametrize("data_format", ["xml", "json"])
async def test_safe_mode_refuses_a_message_for_another_app(fetch, clock, services, data_format):
    plain, content_type = body_for(data_format, popup((TEMPLATE, "accept")))
    query = signed(clock)
    body, msg_signature = encrypted(plain, query, "wx-some-other-app", data_format)
    sealed = {**query, "encrypt_type": "aes", "msg_signature": msg_signature}
    answer = await post(fetch, sealed, body, content_type)
    assert answer.status == 403
    assert answer.error["code"] == "wrong_appid"
    assert (await services.consents.state(await user_id_of(services))).one_time == {}


@pytest.mark.parametrize("push_aes_key", [AES_KEY])
async def test_safe_mode_refuses_plaintext(fetch, clock, services):
    body, content_type = body_for("json", popup((TEMPLATE, "accept")))
    answer = await post(fetch, signed(clock), body, content_type)
    assert answer.status == 403
    assert answer.error["code"] == "encryption_required"
    assert (await services.consents.state(await user_id_of(services))).one_time == {}


async def test_encrypted_push_is_refused_without_a_key(fetch, clock, api):
    plain, content_type = body_for("xml", popup((TEMPLATE, "accept")))
    query = signed(clock)
    body, msg_signature = encrypted(plain, query, api.runtime.context.wechat_appid, "xml")
    sealed = {**query, "encrypt_type": "aes", "msg_signature": msg_signature}
    answer = await post(fetch, sealed, body, content_type)
    assert answer.status == 403
    assert answer.error["code"] == "encryption_not_configured"


# --- personal data ------------------------------------------------------------------------------


@pytest.mark.parametrize("push_aes_key", ["", AES_KEY])
async def test_no_openid_in_the_clear_in_the_database(fetch, clock, api, store, push_aes_key):
    appid = api.runtime.context.wechat_appid
    pushes = [
        popup((TEMPLATE, "accept"), (OTHER_TEMPLATE, "reject")),
        event_doc(CHANGE, [{"TemplateId": TEMPLATE, "SubscribeStatusString": "reject"}]),
        event_doc(
            SENT,
            [{"TemplateId": TEMPLATE, "MsgID": "1", "ErrorCode": "0", "ErrorStatus": "success"}],
        ),
    ]
    for index, doc in enumerate(pushes):
        data_format = ("xml", "json")[index % 2]
        body, content_type = body_for(data_format, doc)
        query = signed(clock)
        if push_aes_key:
            body, msg_signature = encrypted(body, query, appid, data_format)
            query = {**query, "encrypt_type": "aes", "msg_signature": msg_signature}
        assert accepted(await post(fetch, query, body, content_type))
    database = store.database
    scanned = 0
    for name in await database.list_collection_names():
        async for document in database[name].find({}):
            scanned += 1
            assert OPENID.encode() not in bson.encode(document), name
    assert scanned > 0


# --- the query, as the route declares it --------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "replace"),
    [
        ("GET", {"signature": "A" * 40}),
        ("GET", {"timestamp": "12345678901"}),
        ("GET", {"nonce": "a b"}),
        ("GET", {"echostr": "回声"}),
        ("POST", {"encrypt_type": "raw"}),
        ("POST", {"msg_signature": "0" * 41}),
        ("POST", {"openid": "o\\x00"}),
    ],
)
async def test_a_query_value_outside_wechats_form_is_refused_by_name(
    fetch, clock, store, method, replace
):
    query = {**signed(clock), **({"echostr": "5831046752"} if method == "GET" else {}), **replace}
    body, content_type = body_for("xml", popup((TEMPLATE, "accept")))
    answer = await fetch(
        f"{PUSH}?{urlencode(query)}",
        method,
        body=body if method == "POST" else None,
        headers={"Content-Type": content_type} if method == "POST" else None,
    )
    assert answer.status == 422
    assert [d["field"] for d in answer.error["details"]] == list(replace)
    # Refused before the signature was checked: the nonce is not used up.
    assert await store.collection(PUSH_NONCES).count_documents({}) == 0
