"""Time-based one-time passwords (RFC 6238): enrolment secrets and replay-proof verification."""

from __future__ import annotations

import datetime as dt

import pyotp

STEP_SECONDS = 30
# Accept the previous and next step too: phones' clocks drift by a few seconds.
DRIFT_STEPS = 1
ISSUER = "Anbang 安帮"


def new_secret() -> str:
    return pyotp.random_base32()


def provisioning_uri(secret: str, account: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=account, issuer_name=ISSUER)


def matching_step(secret: str, code: str, now: dt.datetime) -> int | None:
    """The time step `code` belongs to near `now`, or None when it matches none."""
    code = code.strip()
    if not (len(code) == 6 and code.isdigit()):
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // STEP_SECONDS
    for step in range(current - DRIFT_STEPS, current + DRIFT_STEPS + 1):
        if pyotp.utils.strings_equal(totp.at(step * STEP_SECONDS), code):
            return step
    return None


def code_at(secret: str, moment: dt.datetime) -> str:
    """The code an authenticator shows at `moment` (for tests and enrolment checks)."""
    return pyotp.TOTP(secret).at(moment)
