"""Who is calling: the identity every service and the audit log receive with a request."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Identity:
    """Who is calling: the account, its role and where it sits in the organisation tree."""

    user_id: str | None = None
    role: str | None = None
    org_id: str | None = None
    # The caller's node and its ancestors, root first; a record is in the caller's subtree
    # when its own path contains the caller's org_id.
    org_path: Sequence[str] = ()
    session_id: str | None = None
    # How the session was opened: "staff" (password, plus TOTP when enrolled) or "mp" (WeChat).
    channel: str = "staff"
    second_factor: bool = False
    # A session that may only finish enrolment (TOTP, or a password change) before anything else.
    restricted: str | None = None
    # For a person or guardian signed in through the mini-program: whose file they act on.
    subject_id: str | None = None
    # The WeChat account a mini-program session belongs to (bound or not).
    wechat_user_id: str | None = None
    # The operator at the command line and the start-up bootstrap: no place in the tree, no
    # limit to it. Never set for a request.
    unscoped: bool = False
    # The session is due to be marked seen, and the request's own ordered batch will do it
    # (`SessionService.seen_write`): the check-in, whose batch is written anyway.
    seen_due: bool = False

    @property
    def authenticated(self) -> bool:
        return self.user_id is not None

    def reaches(self, org_path: Sequence[str]) -> bool:
        """Whether a record filed under `org_path` lies in this caller's subtree."""
        return self.unscoped or (self.org_id is not None and self.org_id in org_path)


# The caller of a request that carries no (valid) token.
ANONYMOUS = Identity()
