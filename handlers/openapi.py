"""The OpenAPI document, generated from the route table and the handlers' pydantic models."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from handlers.base import BaseHandler, EndpointDoc, Out
from handlers.query import declared_query
from models.idempotency import KEY_PATTERN
from models.policy import PUBLIC, SELF

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")

JsonSchemaMode = Literal["validation", "serialization"]


class ErrorBody(Out):
    code: str
    message: str
    details: Any = None
    request_id: str | None = None


class ErrorEnvelope(Out):
    """Every error answer has this shape."""

    error: ErrorBody


class FieldProblem(Out):
    field: str
    message: str


class MpErrorBody(Out):
    code: str
    message: str
    details: list[FieldProblem]
    request_id: str | None = None


class MpErrorEnvelope(Out):
    """Every `/mp/v1` error answer has this shape: `message` in Chinese, `details` one
    `{field, message}` per offending field (the body's problem names the field `(body)`)."""

    error: MpErrorBody


# The codes any mini-program operation may answer, by what the operation is: a caller's
# session (not PUBLIC), a bound account (neither PUBLIC nor SELF), a JSON body, a key.
_MP_SESSION_CODES = (
    ("unauthenticated", 401, "未登录：请先调用登录接口获取令牌"),
    ("invalid_token", 401, "登录已过期或令牌无效：请重新登录"),
    ("wrong_channel", 403, "该令牌不是小程序会话"),
)
_MP_BOUND_CODES = (
    ("not_bound", 403, "微信尚未绑定：请先用工作人员提供的绑定码完成绑定"),
    ("forbidden", 403, "当前身份无权进行此操作"),
)
_MP_BODY_CODES = (
    ("body_required", 400, "缺少请求内容：须发送 JSON"),
    ("invalid_json", 400, "请求内容不是有效的 JSON"),
    ("body_too_large", 413, "请求内容过大"),
    ("unsupported_media_type", 415, "请求内容类型不受支持"),
    ("validation_failed", 422, "填写的内容有误：`details` 逐项列出字段和原因"),
)
_MP_QUERY_CODES = (("validation_failed", 422, "查询参数有误：`details` 列出参数名"),)
_MP_KEY_CODES = (
    ("invalid_idempotency_key", 422, "请求编号（Idempotency-Key）格式不正确"),
    ("idempotency_conflict", 409, "该请求编号已用于另一次不同的提交"),
    ("idempotency_in_progress", 409, "同一请求编号的首次提交仍在处理中，请稍后重试"),
)
_MP_OUTAGE = (("unavailable", 503, "服务暂时不可用：按 Retry-After 稍后重试"),)


def mp_error_codes(
    doc: EndpointDoc, action: str | None, has_query: bool
) -> dict[str, tuple[int, str]]:
    """code -> (status, meaning) that a `/mp/v1` operation may answer: the common ones its
    policy, body and key imply, then what the endpoint declares (which wins on a clash)."""
    table: list[tuple[str, int, str]] = []
    if action != PUBLIC:
        table += _MP_SESSION_CODES
        if action != SELF:
            table += _MP_BOUND_CODES
    if has_query:
        table += _MP_QUERY_CODES
    if doc.body is not None or doc.body_media is not None:
        table += _MP_BODY_CODES
    if doc.idempotency is not None:
        table += _MP_KEY_CODES
    table += _MP_OUTAGE
    if 404 in doc.errors:
        # What an id that does not exist, or is not the caller's to see, answers.
        table.append(("not_found", 404, "未找到，或不在本人可查看的范围内"))
    table += doc.codes
    return {code: (status, meaning) for code, status, meaning in table}


def idempotency_parameter(required: bool) -> dict[str, Any]:
    """The `Idempotency-Key` header as the service checks it (models.idempotency.KEY_PATTERN)."""
    return {
        "name": "Idempotency-Key",
        "in": "header",
        "required": required,
        "description": "每次提交生成一个新的请求编号（8 至 128 位字母、数字或 ._:-），重试时原样"
        "再次发送：重试得到首次的结果；同一编号用于另一次不同的提交得到 409。",
        "schema": {
            "type": "string",
            "minLength": 8,
            "maxLength": 128,
            "pattern": KEY_PATTERN.pattern,
        },
    }


_ERROR_DESCRIPTIONS = {
    400: "Malformed request (not JSON, bad encoding, too deeply nested)",
    401: "Authentication required or expired",
    403: "The caller's role or level may not do this",
    404: "Not found, or outside the caller's scope",
    409: "Conflict with the current state (stale version, forbidden transition, duplicate)",
    413: "Request body too large",
    415: "Request body is not application/json",
    422: "Validation failed; `details` lists each offending field path",
    423: "Account locked",
    429: "Too many requests; see Retry-After",
    503: "A dependency (the database) is unavailable; see Retry-After",
}

Route = Sequence[Any]

# operationIds are derived from the path, so every route has one and a generated client reads
# well: the method gives the verb (`getSubject`, `updateSubject`, `setOrgArea`), a GET of a
# collection whose items have paths lists (`listSubjects`), a POST to a collection creates
# (`createSubjectNote`), and a POST to an action segment takes the action's verb
# (`decideLeaveRequest`); `{}` stands for the nouns of the path. Mini-program operations
# start with `mp` (`mpLogin`). A new action segment that reads badly as `create...` goes here.
_ACTIONS = {
    "ack": "acknowledge{}",
    "arrival": "record{}Arrival",
    "assign": "assign{}",
    "attendance": "record{}Attendance",
    "bind": "bind",
    "binding-code": "issue{}BindingCode",
    "break-glass": "breakGlass{}",
    "cancel": "cancel{}",
    "checkins": "checkIn{}",
    "checkout": "checkOut{}",
    "close": "close{}",
    "confirm": "confirm{}",
    "consents": "record{}Consents",
    "decision": "decide{}",
    "disable": "disable{}",
    "enable": "enable{}",
    "excuse": "excuse{}",
    "extension": "extend{}",
    "handover": "handOver{}",
    "import": "import{}",
    "intake": "record{}Intake",
    "login": "login",
    "logout": "logout",
    "move": "move{}",
    "outcome": "record{}Outcome",
    "password": "change{}Password",
    "password-reset": "reset{}Password",
    "push": "receive{}Push",
    "renewals": "renew{}",
    "report": "record{}Report",
    "result": "record{}Result",
    "return": "record{}Return",
    "review": "review{}",
    "risk": "assess{}Risk",
    "search": "search{}",
    "sign": "sign{}",
    "supervision-level": "change{}SupervisionLevel",
    "terminate": "terminate{}",
    "totp": "enrol{}Totp",
    "transition": "transition{}",
}
_VERBS = {"get": "get", "post": "create", "put": "set", "patch": "update", "delete": "delete"}
_API_PREFIX = re.compile(r"^/(?:(mp)/)?(?:api/)?v\d+/")


def _pascal(segment: str) -> str:
    return "".join(word[:1].upper() + word[1:] for word in segment.split("-"))


def _singular(segment: str) -> str:
    if segment.endswith("ies"):
        return segment[:-3] + "y"
    if segment.endswith("s") and not segment.endswith("ss"):
        return segment[:-1]
    return segment


def collections(templates: Iterable[str]) -> frozenset[str]:
    """The paths whose items have paths of their own (`/api/v1/staff` for `.../{staff_id}`)."""
    return frozenset(
        template[: match.start()].rstrip("/")
        for template in templates
        for match in re.finditer(r"\{\w+\}", template)
    )


def operation_id(method: str, template: str, listed: frozenset[str] = frozenset()) -> str:
    """`GET /api/v1/assistance/resources/{resource_id}` -> `getAssistanceResource`,
    `POST /mp/v1/auth/login` -> `mpLogin`: camelCase, verb first. `listed` holds the
    collections (see `collections`): a GET of one of them lists it."""
    prefix = _API_PREFIX.match(template)
    mp = bool(prefix and prefix.group(1))
    segments = template[prefix.end() if prefix else 1 :].strip("/").split("/")
    literals: list[tuple[str, bool]] = []  # (segment, names one item: a parameter follows)
    for segment in segments:
        if segment.startswith("{"):
            if literals:
                literals[-1] = (literals[-1][0], True)
        elif segment:
            literals.append((segment, False))
    action = None
    if method == "post" and literals and not segments[-1].startswith("{"):
        action = _ACTIONS.get(literals[-1][0])
        if action is not None:
            literals.pop()
        else:
            # A POST to a collection adds one item to it.
            literals[-1] = (literals[-1][0], True)
    nouns = []
    for index, (segment, item) in enumerate(literals):
        last = index == len(literals) - 1
        if segment == "me":
            nouns.append("Me" if last and action is None else "My")
        else:
            nouns.append(_pascal(_singular(segment) if item else segment))
    verb = "list" if method == "get" and template in listed else _VERBS[method]
    name = (action or verb + "{}").format("".join(nouns))
    return "mp" + name[:1].upper() + name[1:] if mp else name


def _example_details(status: int, code: str) -> list[dict[str, str]]:
    if code in ("invalid_idempotency_key", "idempotency_key_required"):
        return [{"field": "Idempotency-Key", "message": "格式不正确"}]
    if status == 422:
        return [{"field": "(body)", "message": "此项为必填项"}]
    return []


def _declared_example(model: type[BaseModel]) -> Any:
    extra = model.model_config.get("json_schema_extra")
    examples = extra.get("examples") if isinstance(extra, dict) else None
    return copy.deepcopy(examples[0]) if isinstance(examples, list) and examples else None


# What a made-up example says for a string of each format (a date in the mini-program's zone).
_FORMAT_EXAMPLES = {
    "date-time": "2026-11-02T09:00:00+08:00",
    "date": "2026-11-02",
    "time": "09:00:00",
    "email": "worker@example.org",
    "uri": "https://example.org/",
}


def schema_example(schema: Any, definitions: dict[str, Any], depth: int = 0) -> Any:
    """A value that fits `schema` (its own `examples` first), for a model that declares none:
    every operation of the mini-program shows what it takes and answers."""
    if not isinstance(schema, dict) or depth > 12:
        return None
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return schema_example(definitions.get(name), definitions, depth + 1)
    if schema.get("examples"):
        return copy.deepcopy(schema["examples"][0])
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            options = [o for o in schema[key] if o.get("type") != "null"] or schema[key]
            return schema_example(options[0], definitions, depth + 1)
    if "allOf" in schema:
        return schema_example(schema["allOf"][0], definitions, depth + 1)
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        return {
            name: schema_example(prop, definitions, depth + 1)
            for name, prop in (schema.get("properties") or {}).items()
        }
    if kind == "array":
        item = schema_example(schema.get("items", {}), definitions, depth + 1)
        return [item] * max(1, int(schema.get("minItems", 1)))
    if kind == "integer":
        if "minimum" in schema:
            return int(schema["minimum"])
        return int(schema["exclusiveMinimum"]) + 1 if "exclusiveMinimum" in schema else 1
    if kind == "number":
        return float(schema.get("minimum", 0))
    if kind == "boolean":
        return True
    if kind == "string":
        if schema.get("format") in _FORMAT_EXAMPLES:
            return _FORMAT_EXAMPLES[schema["format"]]
        text = "示例"
        return (text * max(1, int(schema.get("minLength", 1))))[: schema.get("maxLength", 64)]
    return None


def path_template(pattern: str) -> str:
    """`/api/v1/subjects/(?P<subject_id>[^/]+)` -> `/api/v1/subjects/{subject_id}`."""
    template = _NAMED_GROUP.sub(lambda m: "{" + m.group(1) + "}", pattern)
    return template.rstrip("$")


def _operations(routes: Iterable[Route]) -> Iterable[tuple[str, str, type[BaseHandler], str]]:
    for route in routes:
        pattern, handler = route[0], route[1]
        if not (isinstance(handler, type) and issubclass(handler, BaseHandler)):
            continue
        for method in HTTP_METHODS:
            function = getattr(handler, method, None)
            if getattr(function, "__endpoint__", None) is not None:
                yield pattern, method, handler, path_template(pattern)


def _action(handler: type[BaseHandler], method: str) -> str | None:
    declared = handler.access
    if declared is None or isinstance(declared, str):
        return declared
    return declared.get(method.upper())


def build_openapi(routes: Sequence[Route], *, title: str, version: str) -> dict[str, Any]:
    operations = list(_operations(routes))
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [
        (ErrorEnvelope, "serialization"),
        (MpErrorEnvelope, "serialization"),
    ]
    for _, method, handler, _ in operations:
        doc: EndpointDoc = getattr(handler, method).__endpoint__
        if doc.body is not None:
            wanted.append((doc.body, "validation"))
        if doc.response is not None:
            wanted.append((doc.response, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    error_ref = refs[(ErrorEnvelope, "serialization")]
    mp_error_ref = refs[(MpErrorEnvelope, "serialization")]
    definitions = top.get("$defs", {})

    def example_of(model: type[BaseModel], ref: dict[str, Any]) -> Any:
        # A mini-program operation shows an example of what it takes and answers: the model's
        # own (which tests/miniprogram_api/test_mp_examples.py parses), else one from its schema.
        declared = _declared_example(model)
        return declared if declared is not None else schema_example(ref, definitions)

    def error_response(status: int) -> dict[str, Any]:
        return {
            "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": error_ref}},
        }

    def mp_error_response(status: int, codes: dict[str, tuple[int, str]]) -> dict[str, Any]:
        here = {code: meaning for code, (at, meaning) in codes.items() if at == status}
        listed = "; ".join(f"`{code}`: {meaning}" for code, meaning in here.items())
        media: dict[str, Any] = {"schema": mp_error_ref}
        if here:
            media["examples"] = {
                code: {
                    "summary": meaning,
                    "value": {
                        "error": {
                            "code": code,
                            "message": meaning,
                            "details": _example_details(status, code),
                            "request_id": "0f1e2d3c4b5a",
                        }
                    },
                }
                for code, meaning in here.items()
            }
        description = _ERROR_DESCRIPTIONS.get(status, "Error")
        return {
            "description": f"{description}. {listed}" if listed else description,
            "content": {"application/json": media},
        }

    paths: dict[str, dict[str, Any]] = {}
    named: dict[str, str] = {}
    listed = collections(template for *_, template in operations)
    for pattern, method, handler, template in operations:
        doc = getattr(handler, method).__endpoint__
        action = _action(handler, method)
        name = operation_id(method, template, listed)
        if name in named:
            # Client generators break on a repeated id: a new route must not take another's.
            raise ValueError(
                f"operationId {name} of {method.upper()} {template} is also {named[name]}'s"
            )
        named[name] = f"{method.upper()} {template}"
        mp = getattr(handler, "audience", None) == "mp"
        operation: dict[str, Any] = {
            "summary": doc.summary_zh if mp and doc.summary_zh else doc.summary,
            "operationId": name,
            "tags": list(doc.tags),
            "x-anbang-action": action,
            "responses": {},
        }
        parameters = [
            {"name": name, "in": "path", "required": True, "schema": {"type": "string"}}
            for name in re.compile(pattern).groupindex
        ]
        # The query parameters the method reads, from the declaration it parses them by.
        query = declared_query(getattr(handler, method))
        if query is not None:
            parameters += query.parameters()
        if doc.idempotency is not None:
            parameters.append(idempotency_parameter(doc.idempotency == "required"))
        if mp and doc.summary_zh:
            operation["description"] = doc.summary
        if parameters:
            operation["parameters"] = parameters
        if action != PUBLIC:
            operation["security"] = [{"bearer": []}]
        success: dict[str, Any] = {"description": "Success"}
        if doc.response is not None:
            success["content"] = {
                "application/json": {"schema": refs[(doc.response, "serialization")]}
            }
            if mp:
                success["content"]["application/json"]["example"] = example_of(
                    doc.response, refs[(doc.response, "serialization")]
                )
        operation["responses"][str(doc.status)] = success
        statuses = set(doc.errors) | {503}
        if query is not None:
            # 422 names a parameter that does not fit; 400 a query that is not UTF-8.
            statuses |= {400, 422}
        if doc.body is not None:
            operation["requestBody"] = {
                "required": True,
                "content": {"application/json": {"schema": refs[(doc.body, "validation")]}},
            }
            if mp:
                operation["requestBody"]["content"]["application/json"]["example"] = example_of(
                    doc.body, refs[(doc.body, "validation")]
                )
            statuses |= {400, 413, 415, 422}
        elif doc.body_media is not None:
            operation["requestBody"] = {
                "required": True,
                "content": copy.deepcopy({k: dict(v) for k, v in doc.body_media.items()}),
            }
            statuses |= {400, 413, 415, 422}
        if action != PUBLIC:
            statuses |= {401, 403}
        if mp:
            codes = mp_error_codes(doc, action, query is not None)
            operation["x-anbang-error-codes"] = {
                code: {"status": status, "description": meaning}
                for code, (status, meaning) in sorted(codes.items())
            }
            statuses |= {status for status, _ in codes.values()}
            for status in sorted(statuses):
                operation["responses"][str(status)] = mp_error_response(status, codes)
        else:
            for status in sorted(statuses):
                operation["responses"][str(status)] = error_response(status)
        paths.setdefault(template, {})[method] = operation

    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": dict(sorted(paths.items())),
        "components": {
            "schemas": top.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }
