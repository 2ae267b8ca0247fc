"""What `make run` prints once everything is up: where the console is and whom to log in as."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from handlers.console.pages import ROLE_ZH
from server.config import Config

# The console's everyday user: a 司法所 officer with people under supervision and decisions to
# make. The demo seeds a case load for this station.
START_WITH = "wuma.officer"


@dataclass(frozen=True)
class DemoLogin:
    role: str
    username: str
    password: str
    name: str


def read_demo_logins(path: Path) -> list[DemoLogin]:
    """The logins `demo seed` wrote (`role username password name` a line), oldest first; a
    username seeded again (a database started afresh) keeps its newest password."""
    if not path.exists():
        return []
    logins: dict[str, DemoLogin] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        parts = line.split(maxsplit=3)
        if len(parts) == 4:
            role, username, password, name = parts
            logins.pop(username, None)
            logins[username] = DemoLogin(role, username, password, name)
    return list(logins.values())


def running_banner(config: Config, logins: list[DemoLogin], logins_file: Path | None) -> str:
    base = f"http://{config.host}:{config.port}"
    lines = [
        "",
        "Anbang is running.",
        f"  console   {base}/console/   <- open this in a browser",
        f"  API       {base}/api/v1/ and /mp/v1/, described at {base}/docs",
        f"  database  {config.database_uri}",
        f"  WeChat    {config.wechat_base_url}",
    ]
    if logins:
        lines += ["", f"Demo logins (also in {logins_file}):"]
        width = max(len(login.username) for login in logins)
        secret = max(len(login.password) for login in logins)
        lines.append(f"  {'user':<{width}}  {'password':<{secret}}  role")
        for login in logins:
            role = ROLE_ZH.get(login.role, login.role)
            if login.name != role:
                role += f"（{login.name}）"
            mark = "   <- start with this one" if login.username == START_WITH else ""
            lines.append(f"  {login.username:<{width}}  {login.password:<{secret}}  {role}{mark}")
    elif config.demo:
        lines += ["", f"No demo logins found in {logins_file}: they are written when first seeded."]
    lines += ["", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)
