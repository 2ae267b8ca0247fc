"""Ports through which services report what they did, for monitoring (server/metrics.py adapts
them to Prometheus); every call is in memory and cheap, never a database command."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol


class CheckinObserver(Protocol):
    def checkin_recorded(self, status: str, flags: Sequence[str]) -> None:
        """A new check-in was stored with `status` and `flags` (a replay is not reported)."""
        ...


class SignInObserver(Protocol):
    def sign_in_refused(self, scope: str, reason: str) -> None:
        """A sign-in attempt in `scope` (the throttle's: `login`, `mp_login`, `mp_bind`) was
        refused: `failed` (a wrong secret), `locked`, `rate_limited` or `invalid_code`."""
        ...

    def sign_in_locked(self, scope: str) -> None:
        """A failure locked an account name in `scope`."""
        ...


class DeliveryObserver(Protocol):
    def delivery_attempted(self, channel: str, outcome: str) -> None:
        """A push outside the app (`wechat`, `sms`, `in_app`) ended with `outcome`."""
        ...

    def delivery_reported(self, status: str) -> None:
        """WeChat reported the fate of a subscribe message it was given (`success`, ...)."""
        ...


class SweepObserver(Protocol):
    def sweep_scheduled(self, sweep: str, interval_seconds: int) -> None: ...

    def sweep_finished(
        self, sweep: str, outcome: str, seconds: float, counts: Mapping[str, int]
    ) -> None:
        """A sweep ran (`ok` or `failed`) for `seconds`; `counts` is what it did."""
        ...

    def lease_state(self, held: bool, change: str | None) -> None:
        """After each renewal: whether this process holds the jobs lease, and the change if
        any (`acquired`, `lost`, `released`)."""
        ...


class Telemetry(CheckinObserver, SignInObserver, DeliveryObserver, SweepObserver, Protocol):
    """Everything a process reports; one adapter serves every service."""


class NullTelemetry:
    """Reports nowhere: the default of every service, and of tools that export no metrics."""

    def checkin_recorded(self, status: str, flags: Sequence[str]) -> None:
        pass

    def sign_in_refused(self, scope: str, reason: str) -> None:
        pass

    def sign_in_locked(self, scope: str) -> None:
        pass

    def delivery_attempted(self, channel: str, outcome: str) -> None:
        pass

    def delivery_reported(self, status: str) -> None:
        pass

    def sweep_scheduled(self, sweep: str, interval_seconds: int) -> None:
        pass

    def sweep_finished(
        self, sweep: str, outcome: str, seconds: float, counts: Mapping[str, int]
    ) -> None:
        pass

    def lease_state(self, held: bool, change: str | None) -> None:
        pass
