"""WeChat's message push (消息推送): signatures, safe-mode decryption, replay refusal, and the
subscribe-message events it carries, recorded as consents.

WeChat signs a push with sha1 over the sorted Token, timestamp and nonce; in safe mode the body is
AES-encrypted with the EncodingAESKey and `msg_signature` also covers the ciphertext. A plaintext
body is not covered by any signature, so what makes a captured triple useless is the window on
the timestamp and the record of every nonce already used (GET and POST alike).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hmac
import json
import logging
import re
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from xml.parsers.expat import ExpatError

import xmltodict
from pymongo import ASCENDING, IndexModel
from pymongo.errors import DuplicateKeyError
from wechatpy.crypto import WeChatCrypto
from wechatpy.exceptions import InvalidAppIdException, InvalidSignatureException
from wechatpy.utils import WeChatSigner

from models.audit import AuditContext, AuditService
from models.clock import Clock
from models.codec import FieldCodec
from models.consents import TEMPLATE_ID, ConsentService
from models.errors import BadRequest, Forbidden
from models.identity import Identity
from models.store import CollectionSpec, Store
from models.telemetry import DeliveryObserver, NullTelemetry

log = logging.getLogger("anbang.wechat_push")

# One document per (timestamp, nonce) already used. Its _id is the pair, so the _id index is the
# unique index that refuses a replay atomically, also when the copy reaches another process; the
# TTL index forgets a pair once its timestamp has left the window (it could not pass again).
PUSH_NONCES = CollectionSpec(
    "wechat_push_nonces",
    (IndexModel([("expires_at", ASCENDING)], expireAfterSeconds=0),),
)

# How far a push's timestamp may be from our clock. WeChat's own servers keep time; five minutes
# absorbs their retries (after 5 s, three times) and clock drift, and bounds how long a captured
# request could be tried again.
WINDOW = dt.timedelta(minutes=5)
# Nonces are kept a little past the window: processes' clocks differ slightly, and the database's
# TTL monitor (which runs about once a minute) never deletes early, only late.
KEEP_NONCES_FOR = WINDOW + dt.timedelta(minutes=1)

EVENT_POPUP = "subscribe_msg_popup_event"
EVENT_CHANGE = "subscribe_msg_change_event"
EVENT_SENT = "subscribe_msg_sent_event"
# Where each event keeps its list in XML (JSON has `List` at the top).
_CONTAINERS = {
    EVENT_POPUP: "SubscribeMsgPopupEvent",
    EVENT_CHANGE: "SubscribeMsgChangeEvent",
    EVENT_SENT: "SubscribeMsgSentEvent",
}
# The popup shows at most a few templates; more entries than this is not WeChat.
MAX_ENTRIES = 20
ACCEPT = "accept"
# "ban": the template was banned by WeChat; nothing may be sent on it, as after a refusal.
REFUSALS = frozenset({"reject", "ban"})
# A delivery report meaning the user blocks this template (WeChat would answer 43101 from now on).
USER_BLOCK = "failed:user block"

_SIGNATURE = re.compile(r"^[0-9a-f]{40}$")
_TIMESTAMP = re.compile(r"^[0-9]{1,10}$")
_NONCE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_ECHOSTR = re.compile(r"^[\x21-\x7e]{1,256}$")
_OPENID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_NAME = re.compile(r"^[A-Za-z0-9_]{1,64}$")
_STATUS = re.compile(r"^[A-Za-z0-9_: ]{1,64}$")
_NUMBER = re.compile(r"^-?[0-9]{1,32}$")

# The identity push events are recorded under: WeChat's server, not a person.
PUSH_IDENTITY = Identity(user_id="wechat-push", role="system")


@dataclass(frozen=True)
class PushSettings:
    """The push configuration of the mini-program: Token, EncodingAESKey (safe mode), AppID."""

    token: str
    aes_key: str = ""
    appid: str = ""


@dataclass(frozen=True)
class PushQuery:
    """What WeChat puts in the push URL's query."""

    signature: str = ""
    timestamp: str = ""
    nonce: str = ""
    msg_signature: str = ""
    encrypt_type: str = ""


@dataclass(frozen=True)
class TemplateChoice:
    """One template in a popup or a settings change: accepted, refused, or something else."""

    template_id: str
    status: str
    scene: str | None = None


@dataclass(frozen=True)
class Delivery:
    """One delivery report of a subscribe message."""

    template_id: str
    msg_id: str | None
    error_code: str | None
    error_status: str | None


@dataclass(frozen=True)
class PushEvent:
    """A push as it was read: its kind, who it concerns (an openid, never stored) and its lists."""

    msg_type: str
    event: str | None
    openid: str | None
    data_format: str
    encrypted: bool
    choices: tuple[TemplateChoice, ...] = ()
    deliveries: tuple[Delivery, ...] = ()


@dataclass
class _Claim:
    """A used nonce; kept once a write that a retry would repeat has been sent."""

    key: str
    keep: bool = False


@dataclass(frozen=True)
class PushReceipt:
    """What was accepted (for the caller's logs; no personal data)."""

    msg_type: str
    event: str | None
    audit_entry: str
    details: dict[str, Any] = field(default_factory=dict)


def _refuse(code: str, message: str) -> Forbidden:
    return Forbidden(message, code=code)


def _malformed(message: str = "The push message is malformed.") -> BadRequest:
    return BadRequest(message, code="malformed_push")


def _sign(*parts: str) -> str:
    # wechatpy's signer (sha1 over the sorted parts), the one `check_signature` and WeChatCrypto
    # use; compared below in constant time, which their `!=` is not.
    signer = WeChatSigner()
    signer.add_data(*parts)
    return str(signer.signature)


def _same(expected: str, supplied: str) -> bool:
    return bool(_SIGNATURE.match(supplied)) and hmac.compare_digest(expected, supplied)


def _valid_aes_key(aes_key: str) -> bool:
    if len(aes_key) != 43:
        return False
    try:
        return len(base64.b64decode(aes_key + "=", validate=True)) == 32
    except (binascii.Error, ValueError):
        return False


def _text(value: Any) -> str | None:
    """A scalar of either format as text (JSON numbers included); None for anything else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, int):
        return str(value)
    return None


def _checked(value: Any, pattern: re.Pattern[str]) -> str | None:
    text = _text(value)
    return text if text is not None and pattern.fullmatch(text) else None


def _load(text: str) -> tuple[dict[str, Any], str]:
    """A push body of either format as a mapping, and which format it was."""
    stripped = text.strip()
    try:
        if stripped.startswith("{"):
            doc = json.loads(stripped)
            data_format = "json"
        elif stripped.startswith("<"):
            # The XML reader wechatpy uses (in parse_message and WeChatCrypto); entities are
            # refused outright, so neither an external entity nor an entity bomb is expanded.
            doc = xmltodict.parse(stripped, disable_entities=True).get("xml")
            data_format = "xml"
        else:
            raise _malformed("The push body is neither JSON nor XML.")
    except (ValueError, RecursionError, ExpatError):
        raise _malformed() from None
    if not isinstance(doc, dict):
        raise _malformed()
    return doc, data_format


def _entries(doc: Mapping[str, Any], event: str) -> list[Mapping[str, Any]]:
    # JSON puts `List` at the top; XML inside an element named after the event. A single entry
    # is an object rather than a one-element list in both.
    raw = doc.get("List")
    if raw is None:
        holder = doc.get(_CONTAINERS[event])
        raw = holder.get("List") if isinstance(holder, dict) else None
    if isinstance(raw, dict):
        raw = [raw]
    if not isinstance(raw, list) or not raw or len(raw) > MAX_ENTRIES:
        raise _malformed("The event's template list is missing or too long.")
    if not all(isinstance(entry, dict) for entry in raw):
        raise _malformed()
    return raw


def _template(entry: Mapping[str, Any]) -> str:
    template_id = _checked(entry.get("TemplateId"), TEMPLATE_ID)
    if template_id is None:
        raise _malformed("A template id is missing or malformed.")
    return template_id


def read_event(doc: Mapping[str, Any], data_format: str, encrypted: bool) -> PushEvent:
    """The parts of a push we act on, checked; anything else in it is left unread."""
    msg_type = _checked(doc.get("MsgType"), _NAME)
    if msg_type is None:
        raise _malformed("MsgType is missing.")
    event = _checked(doc.get("Event"), _NAME) if msg_type == "event" else None
    openid = _checked(doc.get("FromUserName"), _OPENID)
    choices: tuple[TemplateChoice, ...] = ()
    deliveries: tuple[Delivery, ...] = ()
    if event in (EVENT_POPUP, EVENT_CHANGE):
        choices = tuple(
            TemplateChoice(
                _template(entry),
                (_checked(entry.get("SubscribeStatusString"), _NAME) or "").lower(),
                _checked(entry.get("PopupScene"), _NUMBER),
            )
            for entry in _entries(doc, event)
        )
    elif event == EVENT_SENT:
        deliveries = tuple(
            Delivery(
                _template(entry),
                _checked(entry.get("MsgID"), _NUMBER),
                _checked(entry.get("ErrorCode"), _NUMBER),
                _checked(entry.get("ErrorStatus"), _STATUS),
            )
            for entry in _entries(doc, event)
        )
    if event in _CONTAINERS and openid is None:
        raise _malformed("FromUserName is missing or malformed.")
    return PushEvent(msg_type, event, openid, data_format, encrypted, choices, deliveries)


class WeChatPushService:
    """Verifies WeChat's pushes, refuses replays, and records what the events say."""

    collections = (PUSH_NONCES,)
    # Where WeChat's delivery reports are counted (the process's metrics); nowhere by default.
    _observer: DeliveryObserver = NullTelemetry()

    def __init__(
        self,
        store: Store,
        clock: Clock,
        audit: AuditService,
        codec: FieldCodec,
        consents: ConsentService,
    ):
        self._nonces = store.collection(PUSH_NONCES)
        self._clock = clock
        self._audit = audit
        self._codec = codec
        self._consents = consents

    def report_to(self, observer: DeliveryObserver) -> None:
        self._observer = observer

    # --- verification ---------------------------------------------------------------------

    def _check_settings(self, settings: PushSettings) -> None:
        if not settings.token:
            raise _refuse("push_disabled", "Message push is not configured.")
        if settings.aes_key and not _valid_aes_key(settings.aes_key):
            log.error("WECHAT_PUSH_AES_KEY is not a 43-character EncodingAESKey")
            raise _refuse("push_disabled", "Message push is not configured.")

    def _verify(self, settings: PushSettings, query: PushQuery) -> dt.datetime:
        """The signature first (an unsigned caller learns nothing more), then the window."""
        self._check_settings(settings)
        if not (_TIMESTAMP.match(query.timestamp) and _NONCE.match(query.nonce)):
            raise _refuse("bad_signature", "The push is not signed.")
        if not _same(_sign(settings.token, query.timestamp, query.nonce), query.signature):
            raise _refuse("bad_signature", "The push signature is not valid.")
        sent_at = dt.datetime.fromtimestamp(int(query.timestamp), dt.UTC)
        if abs(self._clock.now() - sent_at) > WINDOW:
            raise _refuse("stale_timestamp", "The push timestamp is outside the accepted window.")
        return sent_at

    async def _claim(self, query: PushQuery, sent_at: dt.datetime) -> _Claim:
        """Record the nonce as used; a second use (here or in any other process) is refused."""
        claim = _Claim(f"{query.timestamp}:{query.nonce}")
        try:
            await self._nonces.insert_one(
                {"_id": claim.key, "expires_at": sent_at + KEEP_NONCES_FOR}
            )
        except DuplicateKeyError:
            raise _refuse("replayed", "This push was received before.") from None
        return claim

    async def _release(self, claim: _Claim) -> None:
        # Nothing was applied: WeChat's retry of the same push may still be accepted.
        try:
            await self._nonces.delete_one({"_id": claim.key})
        except Exception as exc:
            log.warning(
                "a push nonce could not be released",
                extra={"fields": {"exception": type(exc).__name__}},
            )

    def _open(self, settings: PushSettings, query: PushQuery, body: bytes) -> PushEvent:
        """The event in the body: decrypted and checked against msg_signature in safe mode."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            raise _malformed("The push body is not UTF-8.") from None
        doc, data_format = _load(text)
        if not settings.aes_key:
            if query.encrypt_type:
                raise _refuse("encryption_not_configured", "Encrypted push is not configured.")
            return read_event(doc, data_format, encrypted=False)
        # With an EncodingAESKey configured, only safe mode is accepted: a plaintext body is
        # covered by no signature, so accepting one would let a captured nonce carry any content.
        if query.encrypt_type != "aes":
            raise _refuse("encryption_required", "The push must be encrypted.")
        encrypted = _text(doc.get("Encrypt"))
        if not encrypted:
            raise _refuse("encryption_required", "The push must be encrypted.")
        expected = _sign(settings.token, query.timestamp, query.nonce, encrypted)
        if not _same(expected, query.msg_signature):
            raise _refuse("bad_signature", "The push msg_signature is not valid.")
        crypto = WeChatCrypto(settings.token, settings.aes_key, settings.appid)
        try:
            plain = crypto.decrypt_message(
                {"Encrypt": encrypted}, query.msg_signature, query.timestamp, query.nonce
            )
        except InvalidAppIdException:
            raise _refuse("wrong_appid", "The push is for another app.") from None
        except InvalidSignatureException:
            raise _refuse("bad_signature", "The push msg_signature is not valid.") from None
        except (ValueError, TypeError, IndexError, KeyError, struct.error):
            # Bad base64, a length that is no whole block, garbage after decryption.
            raise _malformed("The push could not be decrypted.") from None
        inner, inner_format = _load(plain)
        return read_event(inner, inner_format, encrypted=True)

    # --- the two requests -------------------------------------------------------------------

    async def echo(self, settings: PushSettings, query: PushQuery, echostr: str) -> str:
        """WeChat's check of the push URL: answer `echostr` when the request is WeChat's."""
        sent_at = self._verify(settings, query)
        if not _ECHOSTR.match(echostr):
            raise _malformed("echostr is missing or malformed.")
        # The triple is used up here too, so a captured check cannot be replayed as a push.
        await self._claim(query, sent_at)
        return echostr

    async def receive(
        self,
        settings: PushSettings,
        query: PushQuery,
        body: bytes,
        *,
        request_id: str | None = None,
        remote_ip: str | None = None,
    ) -> PushReceipt:
        """Verify, decrypt and record one push; refused (nothing applied) unless it is WeChat's,
        fresh and new."""
        sent_at = self._verify(settings, query)
        event = self._open(settings, query, body)
        claim = await self._claim(query, sent_at)
        ctx = AuditContext(PUSH_IDENTITY, request_id, remote_ip)
        try:
            receipt = await self._apply(ctx, event, claim)
        except Exception:
            if not claim.keep:
                await self._release(claim)
            raise
        for delivery in event.deliveries:
            self._observer.delivery_reported(delivery.error_status or "")
        return receipt

    # --- what the events say ------------------------------------------------------------------

    async def _apply(self, ctx: AuditContext, event: PushEvent, claim: _Claim) -> PushReceipt:
        user_id = await self._codec.blind_index("openid", event.openid) if event.openid else None
        details: dict[str, Any] = {
            "msg_type": event.msg_type,
            "event": event.event,
            "format": event.data_format,
            "encrypted": event.encrypted,
        }
        accepted = sorted({c.template_id for c in event.choices if c.status == ACCEPT})
        refused = sorted({c.template_id for c in event.choices if c.status in REFUSALS})
        if event.event == EVENT_SENT:
            refused = sorted(
                {d.template_id for d in event.deliveries if d.error_status == USER_BLOCK}
            )
            details["deliveries"] = [
                {
                    "template": d.template_id,
                    "msg_id": d.msg_id,
                    "error_code": d.error_code,
                    "status": d.error_status,
                }
                for d in event.deliveries
            ]
        # Only a popup grants a message: a one-time allowance comes from the user's tap in the
        # popup. An "accept" in the settings page lifts no refusal by itself (the next popup
        # acceptance does), so a settings change is recorded but grants nothing.
        grant = accepted if event.event == EVENT_POPUP else []
        details.update(accepted=accepted, refused=refused, granted=grant)
        if event.event == EVENT_POPUP:
            details["scenes"] = sorted({c.scene for c in event.choices if c.scene is not None})
        action = "wechat_push." + (event.event or event.msg_type)
        if user_id is None or not (refused or grant):
            entry = await self._audit.record(
                ctx, action, resource="wechat_user", resource_id=user_id, details=details
            )
            return PushReceipt(event.msg_type, event.event, entry, details)
        async with self._audit.change(
            ctx, action, resource="wechat_user", resource_id=user_id, details=details
        ) as entry:
            # Refusals first: they can be repeated harmlessly if this push is retried.
            if refused:
                await self._consents.refuse_templates(user_id, refused)
            if grant:
                # From here a retry would count the allowance twice: the nonce stays used.
                claim.keep = True
                await self._consents.accept_templates(None, user_id, grant, long_term=False)
        return PushReceipt(event.msg_type, event.event, entry, details)
