"""The OpenAPI document, generated from the route table and the handlers' pydantic models."""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Sequence
from typing import Any, Literal

from pydantic import BaseModel
from pydantic.json_schema import models_json_schema

from handlers.base import BaseHandler, EndpointDoc
from handlers.query import declared_query
from models.policy import PUBLIC

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
_NAMED_GROUP = re.compile(r"\(\?P<(\w+)>[^)]*\)")

JsonSchemaMode = Literal["validation", "serialization"]


class ErrorBody(BaseModel):
    code: str
    message: str
    details: Any = None
    request_id: str | None = None


class ErrorEnvelope(BaseModel):
    """Every error answer has this shape."""

    error: ErrorBody


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
    wanted: list[tuple[type[BaseModel], JsonSchemaMode]] = [(ErrorEnvelope, "serialization")]
    for _, method, handler, _ in operations:
        doc: EndpointDoc = getattr(handler, method).__endpoint__
        if doc.body is not None:
            wanted.append((doc.body, "validation"))
        if doc.response is not None:
            wanted.append((doc.response, "serialization"))
    unique = list(dict.fromkeys(wanted))
    refs, top = models_json_schema(unique, ref_template="#/components/schemas/{model}")
    error_ref = refs[(ErrorEnvelope, "serialization")]

    def error_response(status: int) -> dict[str, Any]:
        return {
            "description": _ERROR_DESCRIPTIONS.get(status, "Error"),
            "content": {"application/json": {"schema": error_ref}},
        }

    paths: dict[str, dict[str, Any]] = {}
    for pattern, method, handler, template in operations:
        doc = getattr(handler, method).__endpoint__
        action = _action(handler, method)
        operation: dict[str, Any] = {
            "summary": doc.summary,
            "operationId": f"{handler.__name__}.{method}",
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
        if parameters:
            operation["parameters"] = parameters
        if action != PUBLIC:
            operation["security"] = [{"bearer": []}]
        success: dict[str, Any] = {"description": "Success"}
        if doc.response is not None:
            success["content"] = {
                "application/json": {"schema": refs[(doc.response, "serialization")]}
            }
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
            statuses |= {400, 413, 415, 422}
        elif doc.body_media is not None:
            operation["requestBody"] = {
                "required": True,
                "content": copy.deepcopy({k: dict(v) for k, v in doc.body_media.items()}),
            }
            statuses |= {400, 413, 415, 422}
        if action != PUBLIC:
            statuses |= {401, 403}
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
