"""`make deploy-check`: the files in ops/deploy/ hold, with Debian's nginx in front of two APIs.

The nginx site is rendered from the shipped template (`${NAME}` placeholders, string.Template)
with test ports, paths and a self-signed certificate, checked by `nginx -t`, and run in front
of two `python -m server serve` processes on the embedded database; every request goes over
TLS from a loopback address. The systemd units, the environment file, the backup script and
the compose file are checked as far as this machine can run them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import ipaddress
import json
import os
import re
import shutil
import socket
import ssl
import string
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from configparser import ConfigParser
from dataclasses import dataclass
from pathlib import Path

import pytest
import tornado.web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from pymongo import MongoClient

from server.app import all_routes
from server.config import VARIABLES, Config
from tests.process_support import (
    REPO_ROOT,
    Launched,
    environment,
    free_port,
    get,
    launched,
    log_records,
    port_open,
    run_cli,
    start_database,
    wait_for_ready,
    wait_until,
)

pytestmark = pytest.mark.slow

DEPLOY = REPO_ROOT / "ops" / "deploy"
SITE = DEPLOY / "nginx" / "anbang.conf"
UNITS = DEPLOY / "systemd"
ENV_FILE = DEPLOY / "anbang.env"
CONSOLE_STATIC = REPO_ROOT / "handlers" / "console" / "static"
# Where the units expect the installation; the checks put the repository there instead.
INSTALL_DIR = "/opt/anbang"
PLACEHOLDERS = {
    "SERVER_NAME",
    "HTTPS_PORT",
    "HTTP_PORT",
    "TLS_CERTIFICATE",
    "TLS_CERTIFICATE_KEY",
    "API_SERVERS",
    "CONSOLE_STATIC_DIR",
    "MAX_BODY_BYTES",
}
DEFAULT_BODY = int(next(v.default for v in VARIABLES if v.name == "ANBANG_MAX_BODY_BYTES"))

NGINX = shutil.which("nginx") or next(
    (p for p in ("/usr/sbin/nginx",) if os.access(p, os.X_OK)), None
)
needs_nginx = pytest.mark.skipif(
    NGINX is None, reason="nginx is not installed: `make deploy-check` installs Debian's nginx"
)


# --- the site, rendered -----------------------------------------------------------------------


def render_site(values: dict[str, str]) -> str:
    """The shipped site with its placeholders filled; nginx's own `$name` variables pass."""
    text = SITE.read_text(encoding="utf-8")
    assert set(re.findall(r"\$\{(\w+)\}", text)) == PLACEHOLDERS
    assert set(values) == PLACEHOLDERS
    rendered = string.Template(text).safe_substitute(values)
    assert "${" not in rendered
    return rendered


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for localhost and 127.0.0.1, valid a day, and its key."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "site.crt", directory / "site.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return cert_path, key_path


def main_config(directory: Path, site: Path) -> Path:
    """What /etc/nginx/nginx.conf gives the site on Debian, with everything under `directory`."""
    # As root, workers would drop to nobody and could not read the test's files.
    user = "user root root;\n" if os.geteuid() == 0 else ""
    for name in ("body", "proxy", "fastcgi", "uwsgi", "scgi"):
        (directory / name).mkdir(exist_ok=True)
    config = directory / "nginx.conf"
    config.write_text(
        f"""{user}worker_processes 1;
pid {directory}/nginx.pid;
error_log {directory}/error.log info;
events {{ worker_connections 256; }}
http {{
    access_log {directory}/access.log;
    client_body_temp_path {directory}/body;
    proxy_temp_path {directory}/proxy;
    fastcgi_temp_path {directory}/fastcgi;
    uwsgi_temp_path {directory}/uwsgi;
    scgi_temp_path {directory}/scgi;
    include {site};
}}
"""
    )
    return config


def nginx_test(config: Path, directory: Path) -> subprocess.CompletedProcess:
    assert NGINX is not None
    return subprocess.run(
        [NGINX, "-t", "-p", str(directory), "-c", str(config), "-e", str(directory / "error.log")],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


# --- requests through nginx -------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    @property
    def from_app(self) -> bool:
        """The application names every request it answers; nginx's own answers name none."""
        return "X-Request-Id" in self.headers

    @property
    def error_code(self) -> str:
        return str(json.loads(self.body)["error"]["code"])


@dataclass
class Site:
    https_port: int
    http_port: int
    cert: Path
    apis: list[Launched]
    metrics_ports: list[int]
    env: dict[str, str]

    def served(
        self, method: str, path: str, source: str, apis: list[Launched] | None = None
    ) -> bool:
        """Whether an API process (of `apis`, or any) logged answering `method path` for a
        client at `source`."""
        return any(
            r.get("method") == method and r.get("path") == path and r.get("remote_ip") == source
            for api in (self.apis if apis is None else apis)
            for r in log_records(api, "request")
        )

    def tls(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cert))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context

    def request(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        source: str = "127.0.0.1",
    ) -> Answer:
        """One request over TLS from `source` (any 127.x address is this machine)."""
        connection = http.client.HTTPSConnection(
            "127.0.0.1",
            self.https_port,
            context=self.tls(),
            timeout=30,
            source_address=(source, 0),
        )
        try:
            connection.request(method, path, body=body, headers=headers or {})
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Iterator[Site]:
    if NGINX is None:
        pytest.skip("nginx is not installed: `make deploy-check` installs Debian's nginx")
    tmp = tmp_path_factory.mktemp("deploy")
    env = environment(tmp, ANBANG_BEHIND_PROXY="1", ANBANG_HOST="127.0.0.1")
    with contextlib.ExitStack() as stack:
        start_database(env, tmp / "db.log", stack)
        apis = []
        # One after the other: the first makes the master key both use.
        for index in (1, 2):
            # Each process its own metrics port, as the units' per-instance files give them.
            api_env = {
                **env,
                "ANBANG_PORT": str(free_port()),
                "ANBANG_METRICS_PORT": str(free_port()),
            }
            api = stack.enter_context(launched(["serve"], api_env, tmp / f"api{index}.log"))
            wait_for_ready(api, int(api_env["ANBANG_PORT"]), 90)
            apis.append((api, int(api_env["ANBANG_PORT"]), int(api_env["ANBANG_METRICS_PORT"])))

        nginx_dir = tmp / "nginx"
        nginx_dir.mkdir()
        cert, key = self_signed(nginx_dir)
        https_port, http_port = free_port(), free_port()
        site_file = nginx_dir / "anbang.conf"
        site_file.write_text(
            render_site(
                {
                    "SERVER_NAME": "localhost",
                    "HTTPS_PORT": str(https_port),
                    "HTTP_PORT": str(http_port),
                    "TLS_CERTIFICATE": str(cert),
                    "TLS_CERTIFICATE_KEY": str(key),
                    "API_SERVERS": " ".join(
                        f"server 127.0.0.1:{port} max_fails=0;" for _, port, _ in apis
                    ),
                    "CONSOLE_STATIC_DIR": str(CONSOLE_STATIC),
                    "MAX_BODY_BYTES": str(DEFAULT_BODY),
                }
            ),
            encoding="utf-8",
        )
        config = main_config(nginx_dir, site_file)
        checked = nginx_test(config, nginx_dir)
        assert checked.returncode == 0, checked.stderr
        assert "syntax is ok" in checked.stderr
        # Nothing nginx would only warn about either, but for `listen ... http2`, which
        # nginx 1.25.1 and later (Debian 13) call deprecated and still obey.
        warnings = [
            line
            for line in checked.stderr.splitlines()
            if "[warn]" in line and '"listen ... http2" directive is deprecated' not in line
        ]
        assert not warnings, checked.stderr

        log = (nginx_dir / "nginx.out").open("wb")
        stack.callback(log.close)
        assert NGINX is not None
        nginx = subprocess.Popen(
            [
                NGINX,
                "-p",
                str(nginx_dir),
                "-c",
                str(config),
                "-e",
                str(nginx_dir / "error.log"),
                "-g",
                "daemon off;",
            ],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def stop_nginx() -> None:
            # SIGTERM: nginx's fast shutdown, its workers with it.
            nginx.terminate()
            try:
                nginx.wait(timeout=10)
            except subprocess.TimeoutExpired:
                nginx.kill()
                nginx.wait(timeout=10)

        stack.callback(stop_nginx)
        wait_until(lambda: port_open(https_port) or nginx.poll() is not None, 20, "nginx listening")
        assert nginx.poll() is None, (nginx_dir / "error.log").read_text()
        yield Site(
            https_port, http_port, cert, [api for api, *_ in apis], [m for *_, m in apis], env
        )


# --- what a person's browser and phone notice -------------------------------------------------


@needs_nginx
def test_the_site_speaks_tls_and_http2_with_hsts(site):
    # HTTP/2 is offered in the TLS handshake (ALPN), beside HTTP/1.1.
    context = site.tls()
    context.set_alpn_protocols(["h2", "http/1.1"])
    with (
        socket.create_connection(("127.0.0.1", site.https_port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="localhost") as tls,
    ):
        assert tls.selected_alpn_protocol() == "h2"
        assert tls.version() in ("TLSv1.2", "TLSv1.3")

    answer = site.request("GET", "/healthz")
    assert answer.status == 200 and answer.from_app
    assert answer.headers.get_all("Strict-Transport-Security") == [
        "max-age=31536000; includeSubDomains"
    ]
    # nginx does not say which version it is.
    assert answer.headers["Server"] == "nginx"

    # Plain HTTP only sends the browser to HTTPS.
    connection = http.client.HTTPConnection("127.0.0.1", site.http_port, timeout=10)
    try:
        connection.request("GET", "/console/login?next=%2Fconsole%2F")
        response = connection.getresponse()
        response.read()
    finally:
        connection.close()
    assert response.status == 301
    assert response.headers["Location"].startswith("https://127.0.0.1")
    assert response.headers["Location"].endswith("/console/login?next=%2Fconsole%2F")


@needs_nginx
def test_the_audit_log_records_the_address_nginx_saw(site):
    # A client naming an address of its choosing in the proxy headers is not believed: the
    # audit entry holds the address the connection came from, as nginx passed it.
    answer = site.request(
        "POST",
        "/api/v1/auth/login",
        json.dumps({"username": "nobody-here", "password": "wrong password"}).encode(),
        {
            "Content-Type": "application/json",
            "X-Real-IP": "203.0.113.7",
            "X-Forwarded-For": "203.0.113.8",
        },
        source="127.0.0.2",
    )
    assert answer.status == 401 and answer.from_app
    with MongoClient(f"mongodb://127.0.0.1:{site.env['ANBANG_DB_PORT']}/?retryWrites=false") as db:
        entry = db["anbang"]["audit"].find_one({"request_id": answer.headers["X-Request-Id"]})
    assert entry is not None
    assert entry["action"] == "auth.login" and entry["outcome"].startswith("refused")
    assert entry["remote_ip"] == "127.0.0.2"


@needs_nginx
def test_both_api_processes_answer(site):
    for _ in range(8):
        assert site.request("GET", "/readyz", source="127.0.0.3").status == 200
    for api in site.apis:
        served = [
            r
            for r in log_records(api, "request")
            if r.get("path") == "/readyz" and r.get("remote_ip") == "127.0.0.3"
        ]
        assert len(served) >= 2, api.output[-2000:]


def _body_routes() -> list[tuple[str, str, int]]:
    """(method, a concrete path, limit) of every route taking more than the JSON limit."""
    found = []
    for route in all_routes():
        pattern, handler = route[0], route[1]
        limit = getattr(handler, "max_body_bytes", None)
        if not isinstance(limit, int) or limit <= DEFAULT_BODY:
            continue
        path = re.sub(r"\(\?P<\w+>[^)]*\)", "x1", pattern)
        for method in ("post", "put", "patch"):
            if getattr(handler, method) is not getattr(tornado.web.RequestHandler, method):
                found.append((method.upper(), path, limit))
    return found


@needs_nginx
def test_bodies_over_the_application_limits_are_refused_by_nginx(site):
    routes = [("POST", "/api/v1/subjects", DEFAULT_BODY), *_body_routes()]
    # The photo uploads and the CSV import at least; a route added with a larger limit joins.
    assert {path for _, path, _ in routes} >= {
        "/mp/v1/uploads",
        "/api/v1/subjects/x1/photo",
        "/api/v1/subjects/import",
    }
    for index, (method, path, limit) in enumerate(routes):
        source = f"127.0.1.{index + 1}"
        headers = {"Content-Type": "application/octet-stream"}
        # A body of the route's own limit reaches the application, which refuses the caller
        # (no session) once the body has arrived: its own 401, never nginx's 502.
        at_limit = site.request(method, path, b"x" * limit, headers, source=source)
        assert at_limit.status == 401 and at_limit.from_app, (method, path, at_limit.status)
        wait_until(
            lambda m=method, p=path, s=source: site.served(m, p, s),
            10,
            f"{method} {path} reaching an API",
        )

        over = site.request(method, path, b"x" * (limit + 1), headers, source=source)
        assert over.status == 413 and not over.from_app, (method, path, over.status)
        assert over.error_code == "body_too_large"
        assert json.loads(over.body)["error"]["message"] == "请求内容过大。"

    # Those dropped connections took no process out of the rotation: both still answer.
    for _ in range(6):
        assert site.request("GET", "/readyz", source="127.0.1.99").status == 200
    assert all(site.served("GET", "/readyz", "127.0.1.99", [api]) for api in site.apis)


@needs_nginx
def test_a_burst_of_logins_is_refused_by_nginx(site):
    def attempt(n: int) -> Answer:
        return site.request(
            "POST",
            "/api/v1/auth/login",
            json.dumps({"username": f"guess-{n}", "password": "wrong password"}).encode(),
            {"Content-Type": "application/json"},
            source="127.0.2.1",
        )

    # A first attempt, then 24 at once, as a script guessing passwords sends them.
    started = time.monotonic()
    first = attempt(0)
    with ThreadPoolExecutor(max_workers=24) as pool:
        answers = [first, *pool.map(attempt, range(1, 25))]
    elapsed = time.monotonic() - started
    reached = [a for a in answers if a.from_app]
    refused = [a for a in answers if not a.from_app]
    # The first attempts reach the application (wrong passwords); past the burst nginx answers.
    assert first.from_app and first.status == 401
    assert refused and all(a.status == 429 for a in refused)
    assert refused[0].error_code == "rate_limited"
    assert refused[0].headers["Retry-After"] == "60"
    # 30 a minute with a burst of 10: eleven at once, one more every two seconds.
    assert len(reached) <= 11 + int(elapsed / 2) + 1
    # Another address is not held back by this one's burst.
    other = site.request(
        "POST",
        "/api/v1/auth/login",
        json.dumps({"username": "guess-x", "password": "wrong password"}).encode(),
        {"Content-Type": "application/json"},
        source="127.0.2.2",
    )
    assert other.status == 401 and other.from_app
    # The login page itself (a GET) is never counted.
    for _ in range(3):
        page = site.request("GET", "/console/login", source="127.0.2.1")
        assert page.status == 200 and page.from_app


@needs_nginx
def test_console_assets_come_from_disk_and_are_cached(site):
    for name, media in (("console.css", "text/css"), ("console.js", "text/javascript")):
        answer = site.request("GET", f"/console/static/{name}")
        assert answer.status == 200 and not answer.from_app
        assert answer.body == (CONSOLE_STATIC / name).read_bytes()
        assert answer.headers["Content-Type"] == f"{media}; charset=utf-8"
        assert answer.headers["Cache-Control"] == "public, max-age=3600"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["Strict-Transport-Security"]
        etag = answer.headers["ETag"]
        assert etag and answer.headers["Last-Modified"]
        # A browser that has it is told it is unchanged.
        again = site.request("GET", f"/console/static/{name}", headers={"If-None-Match": etag})
        assert again.status == 304 and again.body == b""
    # Only scripts and styles come from the folder; anything else is the application's
    # answer (404 for a name it does not serve).
    licence = site.request("GET", "/console/static/chart-LICENSE.md")
    assert licence.status == 404 and b'<html lang="zh-CN">' in licence.body
    assert site.request("GET", "/console/static/..%2Fpages.py").status == 404


@needs_nginx
def test_metrics_are_not_served_through_the_site(site):
    # Each process serves them on its own listener, for the monitoring host...
    for port in site.metrics_ports:
        status, body = get(port, "/metrics")
        assert status == 200 and b"anbang_" in body
    # ...and the site does not.
    for path in ("/metrics", "/metrics/", "/metrics?format=prometheus"):
        answer = site.request("GET", path)
        assert answer.status == 404 and not answer.from_app, path
        assert answer.error_code == "not_found"
        assert b"anbang_" not in answer.body


# --- the systemd units ------------------------------------------------------------------------


def _unit(name: str) -> ConfigParser:
    parser = ConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    # Continuation lines end in a backslash in unit files, not with an indent alone.
    parser.read_string((UNITS / name).read_text().replace("\\\n", " "))
    return parser


def _subcommands() -> set[str]:
    """The sub-commands `python -m server --help` names."""
    shown = subprocess.run(
        [sys.executable, "-m", "server", "--help"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    listed = re.search(r"\{([a-z,-]+)\}", shown)
    assert listed is not None, shown
    return set(listed.group(1).split(","))


def test_each_unit_starts_a_real_command():
    commands = _subcommands()
    expected = {
        "anbang-api@.service": ["serve", "--processes", "1"],
        "anbang-jobs@.service": ["jobs"],
    }
    for name, args in expected.items():
        service = _unit(name)["Service"]
        words = service["ExecStart"].split()
        python = words.index(f"{INSTALL_DIR}/.venv/bin/python")
        assert words[python + 1 : python + 3] == ["-m", "server"]
        assert words[python + 3] in commands
        assert words[python + 3 :] == args
        assert "EnvironmentFile=/etc/anbang/anbang.env" in (UNITS / name).read_text()
        # Past the application's own grace for requests in flight (ANBANG_SHUTDOWN_GRACE).
        assert int(service["TimeoutStopSec"]) > 20
        assert service["User"] == "anbang"
    api = _unit("anbang-api@.service")["Service"]["ExecStart"]
    # The port is the instance's, on loopback, behind the proxy, whatever the environment file.
    assert "ANBANG_PORT=%i" in api and "ANBANG_HOST=127.0.0.1" in api
    assert "ANBANG_BEHIND_PROXY=1" in api

    backup = _unit("anbang-backup.service")["Service"]
    assert backup["Type"] == "oneshot"
    assert backup["ExecStart"] == f"{INSTALL_DIR}/ops/deploy/anbang-backup"
    timer = _unit("anbang-backup.timer")["Timer"]
    assert timer["Unit"] == "anbang-backup.service" and timer["Persistent"] == "true"


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="no systemd-analyze here")
def test_systemd_accepts_the_units(tmp_path):
    # The units as installed, with this checkout where the installation would be.
    for unit in UNITS.iterdir():
        (tmp_path / unit.name).write_text(unit.read_text().replace(INSTALL_DIR, str(REPO_ROOT)))
    names = [
        "anbang-api@8001.service",
        "anbang-jobs@1.service",
        "anbang-backup.service",
        "anbang-backup.timer",
        "anbang.target",
    ]
    checked = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *(f"./{name}" for name in names)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr
    # Unknown keys and sections are only warned about: none is allowed either.
    assert "Unknown" not in checked.stderr and "Invalid" not in checked.stderr, checked.stderr


# --- the environment file ---------------------------------------------------------------------


def _env_lines() -> list[tuple[str, str, bool, bool]]:
    """(name, value, set, documented) of every variable line, commented out or not; documented:
    a comment line comes before its group of variables."""
    found = []
    documented = False
    for line in ENV_FILE.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"(#?)([A-Z][A-Z0-9_]*)=(.*)", line)
        if match:
            value = match.group(3)
            if len(value) >= 2 and value[0] == value[-1] == '"':
                value = value[1:-1]
            found.append((match.group(2), value, not match.group(1), documented))
            continue
        documented = line.startswith("#") and len(line) > 2 if line.strip() else False
        if line.startswith("# ---"):
            documented = False
    return found


def test_the_environment_file_names_every_variable():
    lines = _env_lines()
    names = [name for name, *_ in lines]
    assert len(names) == len(set(names)), "a variable appears twice"
    wanted = {v.name for v in VARIABLES}
    assert wanted <= set(names), sorted(wanted - set(names))
    undocumented = [name for name, _, _, documented in lines if not documented]
    assert not undocumented


def test_the_environment_file_is_a_production_configuration():
    values = {name: value for name, value, is_set, _ in _env_lines() if is_set}
    config = Config.from_env(values)
    assert config.production and config.behind_proxy and config.require_totp
    assert not config.embedded_database and "replicaSet=" in config.mongodb_uri
    # The site's body limit is this value (ops/deploy/README.md).
    assert config.max_body_bytes == DEFAULT_BODY
    assert values["ANBANG_METRICS_PORT"] == "9464"


# --- the backup script ------------------------------------------------------------------------


def test_the_backup_script_writes_an_archive_and_prunes_old_ones(tmp_path):
    env = environment(tmp_path)
    with contextlib.ExitStack() as stack:
        start_database(env, tmp_path / "db.log", stack)
        keygen = run_cli("backup", "keygen", env=env)
        assert keygen.returncode == 0, keygen.stderr
        # A process has run once against it: the database holds its collections and keys.
        seeded = run_cli("audit", "verify", env=env, timeout=120)
        assert seeded.returncode == 0, seeded.stderr

        backups = tmp_path / "backups"
        backups.mkdir()
        old = backups / "anbang-20200101T000000Z.anbak"
        old.write_bytes(b"old")
        forty_days = time.time() - 40 * 86400
        os.utime(old, (forty_days, forty_days))
        other = backups / "notes.txt"
        other.write_text("not a backup")
        os.utime(other, (forty_days, forty_days))

        ran = subprocess.run(
            [str(DEPLOY / "anbang-backup")],
            env={
                **env,
                "BACKUP_METHOD": "export",
                "BACKUP_DIR": str(backups),
                "BACKUP_KEEP_DAYS": "30",
                "BACKUP_PYTHON": sys.executable,
            },
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert ran.returncode == 0, ran.stderr
        archives = sorted(backups.glob("anbang-*.anbak"))
        assert len(archives) == 1 and archives[0] != old
        assert archives[0].stat().st_mode & 0o077 == 0
        assert other.exists() and not list(backups.glob("*.partial"))
        compared = run_cli("backup", "compare", "--from", str(archives[0]), env=env)
        assert compared.returncode == 0, compared.stdout + compared.stderr

        refused = subprocess.run(
            [str(DEPLOY / "anbang-backup")],
            env={**env, "BACKUP_METHOD": "tar", "BACKUP_DIR": str(backups)},
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert refused.returncode == 2 and "mongodump or export" in refused.stderr


# --- the compose file -------------------------------------------------------------------------


def test_the_compose_file_makes_a_three_member_replica_set():
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the compose file")
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text(encoding="utf-8"))
    services = compose["services"]
    members = {name: s for name, s in services.items() if name.startswith("mongo")}
    assert len(members) == 3
    ports = set()
    for name, member in members.items():
        assert re.fullmatch(r"mongo:8(\.\d+)*", member["image"]), member["image"]
        command = member["command"]
        assert command[command.index("--replSet") + 1] == "anbang"
        assert "--keyFile" in command
        port = command[command.index("--port") + 1]
        ports.add(port)
        # Reachable from this machine only, on the port the set knows the member by.
        assert member["ports"] == [f"127.0.0.1:{port}:{port}"]
        assert member["hostname"] == name
        assert member["restart"] == "unless-stopped"
        assert any(v.endswith(":/data/db") for v in member["volumes"])
    assert len(ports) == 3

    init = services["init"]
    assert init["network_mode"] == "service:mongo1"
    assert set(init["depends_on"]) == set(members)
    script_mount = next(v for v in init["volumes"] if "init-replica-set.js" in v)
    script = DEPLOY / script_mount.split(":")[0]
    text = script.read_text(encoding="utf-8")
    for name, member in members.items():
        port = member["command"][member["command"].index("--port") + 1]
        assert f'"{name}:{port}"' in text
    assert '_id: "anbang"' in text
    # Every secret a service names is declared with its file.
    for service in services.values():
        for secret in service.get("secrets", []):
            assert secret in compose["secrets"]
    # The URI the environment file ships points at these members.
    uri = dict((n, v) for n, v, *_ in _env_lines())["MONGODB_URI"]
    hosts = uri.split("@", 1)[1].split("/", 1)[0].split(",")
    assert sorted(hosts) == sorted(
        f"{name}:{m['command'][m['command'].index('--port') + 1]}" for name, m in members.items()
    )
    if shutil.which("node"):
        parsed = subprocess.run(
            ["node", "--check", str(script)], capture_output=True, text=True, check=False
        )
        assert parsed.returncode == 0, parsed.stderr
