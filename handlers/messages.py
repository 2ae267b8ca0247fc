"""User-facing error messages: English for staff, Chinese for mini-program users."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

_MESSAGES: dict[str, tuple[str, str]] = {
    "bad_request": ("The request is malformed.", "请求格式有误。"),
    "invalid_json": ("The request body is not valid JSON.", "请求内容不是有效的 JSON。"),
    "body_required": ("A JSON body is required.", "请求内容不能为空。"),
    "body_too_large": ("The request body is too large.", "请求内容过大。"),
    "unsupported_media_type": ("The request body must be application/json.", "请求格式不受支持。"),
    "validation_failed": ("The request body is not valid.", "填写的内容有误，请检查后重试。"),
    "invalid": ("The request is not valid.", "请求内容有误。"),
    "unauthenticated": ("Authentication is required.", "请先登录。"),
    "invalid_token": ("The token is invalid or has expired.", "登录已过期，请重新登录。"),
    "wrong_channel": ("This session cannot call this API.", "请在小程序中进行此操作。"),
    "forbidden": ("You are not allowed to do this.", "您没有权限进行此操作。"),
    "no_policy": ("This route declares no access policy.", "您没有权限进行此操作。"),
    "not_found": ("Not found.", "未找到相关内容。"),
    "method_not_allowed": ("This method is not allowed here.", "不支持此操作。"),
    "conflict": ("The request conflicts with the current state.", "操作冲突，请刷新后重试。"),
    "locked": ("The account is temporarily locked.", "账号已被暂时锁定，请稍后再试。"),
    "rate_limited": ("Too many requests; try again later.", "操作过于频繁，请稍后再试。"),
    "unavailable": (
        "The service is temporarily unavailable; try again shortly.",
        "服务暂时不可用，请稍后重试。",
    ),
    "internal_error": ("An internal error occurred.", "系统出现错误，请稍后重试。"),
    "error": ("The request could not be completed.", "请求未能完成。"),
}

# Pydantic error types in the words a mini-program user reads next to the field.
_VALIDATION_ZH: dict[str, str] = {
    "missing": "此项为必填项",
    "extra_forbidden": "不允许的字段",
    "string_type": "应为文字",
    "string_too_short": "内容过短",
    "string_too_long": "内容过长",
    "string_pattern_mismatch": "格式不正确",
    "int_type": "应为整数",
    "int_parsing": "应为整数",
    "float_type": "应为数字",
    "float_parsing": "应为数字",
    "bool_type": "应为是或否",
    "list_type": "应为列表",
    "dict_type": "应为对象",
    "model_type": "应为对象",
    "date_type": "应为日期（YYYY-MM-DD）",
    "date_from_datetime_parsing": "应为日期（YYYY-MM-DD）",
    "date_parsing": "应为日期（YYYY-MM-DD）",
    "datetime_type": "应为时间（ISO 8601）",
    "datetime_parsing": "应为时间（ISO 8601）",
    "timezone_aware": "时间须包含时区",
    "literal_error": "不是允许的取值",
    "enum": "不是允许的取值",
    "greater_than": "数值过小",
    "greater_than_equal": "数值过小",
    "less_than": "数值过大",
    "less_than_equal": "数值过大",
    "too_short": "项目过少",
    "too_long": "项目过多",
    "value_error": "内容不正确",
}


def message_for(code: str, language: str) -> str:
    english, chinese = _MESSAGES.get(code, _MESSAGES["error"])
    return chinese if language == "zh" else english


def validation_message(kind: str, ctx: Mapping[str, Any] | None = None) -> str:
    return _VALIDATION_ZH.get(kind, "内容不正确")
