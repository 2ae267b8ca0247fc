"""Domain exceptions; handlers map each class to an HTTP status in one table."""

from __future__ import annotations

from typing import Any


class DomainError(Exception):
    """Base of every error a service raises on purpose; carries a stable machine code."""

    code = "error"
    default_message = "The request could not be completed."

    def __init__(
        self,
        message: str | None = None,
        *,
        details: Any = None,
        code: str | None = None,
        message_zh: str | None = None,
    ):
        super().__init__(message or self.default_message)
        self.message = message or self.default_message
        self.details = details
        # What a mini-program user reads instead (the staff API answers in English).
        self.message_zh = message_zh
        if code is not None:
            self.code = code


class BadRequest(DomainError):
    """A request that cannot be acted on as sent (an invalid or expired code)."""

    code = "bad_request"
    default_message = "The request cannot be acted on."


class InvalidInput(DomainError):
    """A well-formed request whose content breaks a rule (a field, a date range)."""

    code = "invalid"
    default_message = "The request is not valid."


class UnsupportedMedia(DomainError):
    """An upload whose content is not of a kind accepted (a file that is not an image)."""

    code = "unsupported_media_type"
    default_message = "This kind of file is not accepted."


class NotFound(DomainError):
    """The record does not exist, or is outside the caller's scope: the two look the same."""

    code = "not_found"
    default_message = "Not found."


class Conflict(DomainError):
    """A stale version, a forbidden state transition, a duplicate, a reused idempotency key."""

    code = "conflict"
    default_message = "The request conflicts with the current state."


class NotAuthenticated(DomainError):
    code = "unauthenticated"
    default_message = "Authentication is required."


class Forbidden(DomainError):
    code = "forbidden"
    default_message = "You are not allowed to do this."


class Locked(DomainError):
    code = "locked"
    default_message = "The account is temporarily locked."


class RateLimited(DomainError):
    code = "rate_limited"
    default_message = "Too many requests; try again later."

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int = 60,
        details: Any = None,
        message_zh: str | None = None,
    ):
        super().__init__(message, details=details, message_zh=message_zh)
        self.retry_after = retry_after


class Unavailable(DomainError):
    """A dependency (the database, WeChat) cannot be reached; the caller should retry."""

    code = "unavailable"
    default_message = "The service is temporarily unavailable; try again shortly."

    def __init__(
        self,
        message: str | None = None,
        *,
        retry_after: int = 5,
        details: Any = None,
        message_zh: str | None = None,
    ):
        super().__init__(message, details=details, message_zh=message_zh)
        self.retry_after = retry_after
