"""Configuration from environment variables: each variable, its default and meaning."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote


class ConfigError(Exception):
    """The environment cannot produce a runnable configuration; the message says how to fix it."""


@dataclass(frozen=True)
class Variable:
    name: str
    default: str
    meaning: str


VARIABLES: tuple[Variable, ...] = (
    Variable("ANBANG_ENV", "development", "`development` or `production` (strict settings)"),
    Variable("ANBANG_HOST", "127.0.0.1", "address the API listens on"),
    Variable("ANBANG_PORT", "8000", "port of the API and console"),
    Variable("ANBANG_PROCESSES", "1", "API worker processes (`serve --processes` overrides)"),
    Variable("ANBANG_BEHIND_PROXY", "0", "1: trust X-Forwarded-For / X-Real-Ip from nginx"),
    Variable("MONGODB_URI", "", "MongoDB connection string; unset: the embedded database"),
    Variable("ANBANG_DB_NAME", "anbang", "database name"),
    Variable("ANBANG_DB_PORT", "27018", "port of the embedded database"),
    Variable("ANBANG_DB_PATH", "var/db", "data directory of the embedded database"),
    Variable("ANBANG_WECHAT_PORT", "8010", "port of the local WeChat API stand-in"),
    Variable("WECHAT_APPID", "", "mini-program AppID (production)"),
    Variable("WECHAT_SECRET", "", "mini-program AppSecret (production)"),
    Variable("WECHAT_API_BASE", "", "WeChat API base URL; unset: the local stand-in"),
    Variable(
        "WECHAT_PUSH_TOKEN",
        "",
        "Token of the message-push (消息推送) settings; unset: `/wechat/push` refuses everything",
    ),
    Variable(
        "WECHAT_PUSH_AES_KEY",
        "",
        "EncodingAESKey of the push settings (safe mode); unset: plaintext mode",
    ),
    Variable(
        "WECHAT_TEMPLATES",
        "",
        "subscribe-message template ids, `reminder=<id>,decision=<id>,alert=<id>`; "
        "unset: the stand-in's",
    ),
    Variable(
        "ANBANG_MSG_SEC_CHECK",
        "0",
        "1: free text from the mini-program passes WeChat's msgSecCheck (production)",
    ),
    Variable("ANBANG_MASTER_KEY_FILE", "var/keys/master.key", "master key file (0600)"),
    Variable(
        "ANBANG_MASTER_KEY",
        "file",
        "`file` (ANBANG_MASTER_KEY_FILE) or a key in a hardware module, "
        "`pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=anbang;object=anbang-master` "
        "(suite `standard` only; docs/operations.md, key ceremony)",
    ),
    Variable(
        "ANBANG_PKCS11_PIN_FILE",
        "",
        "file (0600) holding the token's user PIN, for `ANBANG_MASTER_KEY=pkcs11:...`",
    ),
    Variable(
        "ANBANG_PKCS11_PIN",
        "",
        "the token's user PIN itself, when no PIN file is used (never put it in the URI)",
    ),
    Variable(
        "ANBANG_BACKUP_KEY_FILE",
        "var/keys/backup.key",
        "key file (0600) sealing `backup` archives; never the master key, kept apart from both",
    ),
    Variable(
        "ANBANG_CRYPTO_SUITE",
        "standard",
        "`standard` (AES-GCM, HMAC-SHA-256, Ed25519) or "
        "`sm` (国密: SM4-GCM, HMAC-SM3, SM2), for the whole system",
    ),
    Variable(
        "ANBANG_AUDIT_EXPORT",
        "var/audit/checkpoints.jsonl",
        "file (outside the database) where signed audit checkpoints are appended",
    ),
    Variable("ANBANG_BOOTSTRAP_ADMIN", "", "`user:password`: first sys_admin when no staff exist"),
    Variable("ANBANG_REQUIRE_TOTP", "0", "1: every staff account must enrol TOTP (production)"),
    Variable("ANBANG_DEMO", "1", "0: `make run` seeds no demo data"),
    Variable("ANBANG_MAX_BODY_BYTES", "1048576", "largest JSON request body, in bytes"),
    Variable("ANBANG_SHUTDOWN_GRACE", "20", "seconds SIGTERM waits for in-flight requests"),
    Variable("ANBANG_DB_WAIT", "30", "seconds a process waits for the database at start"),
    Variable(
        "ANBANG_DB_OPERATION_TIMEOUT_MS",
        "10000",
        "deadline of each database operation of an API process (503 past it)",
    ),
    Variable(
        "ANBANG_DB_MAX_IDLE_MS",
        "60000",
        "pooled database connections idle longer than this are closed, not reused; keep it "
        "below every idle limit on the path (the embedded database drops a connection idle "
        "for 300 s, firewalls and load balancers often sooner)",
    ),
    Variable("ANBANG_LOG_LEVEL", "INFO", "DEBUG, INFO, WARNING or ERROR"),
    Variable(
        "ANBANG_METRICS_HOST",
        "127.0.0.1",
        "address of the Prometheus metrics listeners (docs/metrics.md); never the public one",
    ),
    Variable(
        "ANBANG_METRICS_PORT",
        "9464",
        "metrics port of the API (`GET /metrics`); worker N of `--processes` adds N; 0: none",
    ),
    Variable(
        "ANBANG_JOBS_METRICS_PORT",
        "9463",
        "metrics port of the jobs process; 0: none",
    ),
    Variable(
        "ANBANG_MAP_TILES",
        "",
        "URL template of map tiles layered under the console's vector maps (e.g. 天地图 with "
        "its key: `https://t0.tianditu.gov.cn/vec_w/wmts?...&TILEMATRIX={z}&TILEROW={y}"
        "&TILECOL={x}&tk=KEY`); empty: vector maps only, nothing fetched",
    ),
    Variable(
        "ANBANG_VAR_DIR",
        "var",
        "where local state lives; the `var/...` defaults above move with it",
    ),
)
_DEFAULTS = {v.name: v.default for v in VARIABLES}


def _pairs(raw: str) -> dict[str, str]:
    """`a=1,b=2` as a mapping; a malformed entry stops the process with its name."""
    pairs: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not key.strip() or not value.strip():
            raise ConfigError(f"WECHAT_TEMPLATES: `{item}` is not `name=template_id`")
        pairs[key.strip()] = value.strip()
    return pairs


def _int(environ: Mapping[str, str], name: str, low: int, high: int) -> int:
    raw = environ.get(name, "").strip() or _DEFAULTS[name]
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a whole number, not {raw!r}") from None
    if not low <= value <= high:
        raise ConfigError(f"{name} must be between {low} and {high}, not {value}")
    return value


def _flag(environ: Mapping[str, str], name: str) -> bool:
    raw = (environ.get(name, "").strip() or _DEFAULTS[name]).lower()
    if raw in ("1", "true", "yes", "on"):
        return True
    if raw in ("0", "false", "no", "off"):
        return False
    raise ConfigError(f"{name} must be 1 or 0, not {raw!r}")


def _text(environ: Mapping[str, str], name: str) -> str:
    return environ.get(name, "").strip() or _DEFAULTS[name]


def _tiles(environ: Mapping[str, str]) -> str:
    """ANBANG_MAP_TILES: an http(s) URL template naming {z}, {x} and {y}, or empty."""
    raw = environ.get("ANBANG_MAP_TILES", "").strip()
    if not raw:
        return ""
    if not raw.startswith(("https://", "http://")) or not all(
        part in raw for part in ("{z}", "{x}", "{y}")
    ):
        raise ConfigError("ANBANG_MAP_TILES must be an http(s) URL template with {z}, {x} and {y}")
    return raw


def _var_path(environ: Mapping[str, str], name: str, var_dir: Path) -> Path:
    """A path that defaults to a place under ANBANG_VAR_DIR (`var/x` -> `<var dir>/x`)."""
    given = environ.get(name, "").strip()
    if given:
        return Path(given)
    return var_dir / Path(_DEFAULTS[name]).relative_to("var")


@dataclass(frozen=True)
class Pkcs11Key:
    """Where the master key lives in a hardware module: the PKCS#11 library, token and label."""

    module: Path
    token: str
    object: str

    def __str__(self) -> str:
        # Safe to log: the PIN never lives in the URI.
        return f"pkcs11:token={self.token};object={self.object}?module-path={self.module}"


_PKCS11_NAMES = {"module": "module", "module-path": "module", "token": "token", "object": "object"}


def _master_key(environ: Mapping[str, str]) -> Pkcs11Key | None:
    """ANBANG_MASTER_KEY: None for the key file, else the parsed `pkcs11:` URI (RFC 7512
    attributes: `;` in the path, `&` after `?`; `module=` or `module-path=` names the library)."""
    raw = _text(environ, "ANBANG_MASTER_KEY")
    if raw == "file":
        return None
    if not raw.startswith("pkcs11:"):
        raise ConfigError("ANBANG_MASTER_KEY must be `file` or a `pkcs11:` URI")
    path, _, query = raw.removeprefix("pkcs11:").partition("?")
    found: dict[str, str] = {}
    for item in [*path.split(";"), *query.split("&")]:
        if not item.strip():
            continue
        name, sep, value = (part.strip() for part in item.partition("="))
        if name in ("pin-value", "pin-source"):
            # Named, never echoed: the URI may be printed where the PIN must not be.
            raise ConfigError(
                "ANBANG_MASTER_KEY must not carry the PIN: put it in ANBANG_PKCS11_PIN_FILE "
                "(0600) or ANBANG_PKCS11_PIN"
            )
        if name == "type" and unquote(value) == "secret-key":
            continue
        if name not in _PKCS11_NAMES or not sep or not value:
            raise ConfigError(
                f"ANBANG_MASTER_KEY: `{name}` is not one of module=, token=, object= "
                "(each with a value)"
            )
        found[_PKCS11_NAMES[name]] = unquote(value)
    missing = [name for name in ("module", "token", "object") if not found.get(name)]
    if missing:
        raise ConfigError(
            "ANBANG_MASTER_KEY: a pkcs11: URI needs "
            + ", ".join(f"{name}=" for name in missing)
            + " (e.g. pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=anbang;"
            "object=anbang-master)"
        )
    return Pkcs11Key(Path(found["module"]), found["token"], found["object"])


def _pkcs11_pin(environ: Mapping[str, str]) -> str:
    """The token's user PIN, from its file (0600, one line) or the environment."""
    pin = environ.get("ANBANG_PKCS11_PIN", "").strip()
    pin_file = environ.get("ANBANG_PKCS11_PIN_FILE", "").strip()
    if pin and pin_file:
        raise ConfigError("set ANBANG_PKCS11_PIN_FILE or ANBANG_PKCS11_PIN, not both")
    if pin_file:
        path = Path(pin_file)
        try:
            mode = path.stat().st_mode & 0o777
            pin = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"ANBANG_PKCS11_PIN_FILE {path} cannot be read ({type(exc).__name__})"
            ) from None
        if mode & 0o077:
            raise ConfigError(
                f"ANBANG_PKCS11_PIN_FILE {path} is readable by others (mode {mode:o}); chmod 600 it"
            )
    if not pin:
        raise ConfigError(
            "ANBANG_MASTER_KEY=pkcs11:... needs the token's user PIN in ANBANG_PKCS11_PIN_FILE "
            "(a 0600 file) or ANBANG_PKCS11_PIN"
        )
    return pin


@dataclass(frozen=True)
class Config:
    env: str
    host: str
    port: int
    processes: int
    behind_proxy: bool
    mongodb_uri: str
    db_name: str
    db_port: int
    db_path: Path
    wechat_port: int
    wechat_appid: str
    wechat_secret: str
    wechat_api_base: str
    wechat_push_token: str
    wechat_push_aes_key: str
    msg_sec_check: bool
    wechat_templates: dict[str, str]
    db_operation_timeout_ms: int
    db_max_idle_ms: int
    master_key_file: Path
    # None: the key file; else the master key on a PKCS#11 token.
    master_key_pkcs11: Pkcs11Key | None
    pkcs11_pin: str = field(repr=False)
    backup_key_file: Path
    crypto_suite: str
    audit_export: Path
    bootstrap_admin: str
    require_totp: bool
    demo: bool
    max_body_bytes: int
    shutdown_grace_seconds: int
    db_wait_seconds: int
    log_level: str
    var_dir: Path
    # Prometheus listeners (server/metrics.py); a port of 0 starts none.
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464
    jobs_metrics_port: int = 9463
    # Map tiles under the console's maps (a URL template with {z}, {x}, {y}); empty: none.
    map_tiles: str = ""

    @property
    def production(self) -> bool:
        return self.env == "production"

    @property
    def embedded_database(self) -> bool:
        return not self.mongodb_uri

    @property
    def database_uri(self) -> str:
        # The embedded database is a single node without retryable-write support.
        return self.mongodb_uri or f"mongodb://127.0.0.1:{self.db_port}/?retryWrites=false"

    @property
    def wechat_base_url(self) -> str:
        return self.wechat_api_base or f"http://127.0.0.1:{self.wechat_port}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Config:
        environ = os.environ if environ is None else environ
        env = _text(environ, "ANBANG_ENV")
        if env not in ("development", "production"):
            raise ConfigError(f"ANBANG_ENV must be development or production, not {env!r}")
        log_level = _text(environ, "ANBANG_LOG_LEVEL").upper()
        if log_level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"ANBANG_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, not {log_level!r}"
            )
        suite = _text(environ, "ANBANG_CRYPTO_SUITE")
        if suite not in ("standard", "sm"):
            raise ConfigError(f"ANBANG_CRYPTO_SUITE must be standard or sm, not {suite!r}")
        push_key = environ.get("WECHAT_PUSH_AES_KEY", "").strip()
        if push_key and len(push_key) != 43:
            # WeChat's EncodingAESKey is 43 characters of base64 (a 32-byte key).
            raise ConfigError("WECHAT_PUSH_AES_KEY must be the 43-character EncodingAESKey")
        bootstrap = environ.get("ANBANG_BOOTSTRAP_ADMIN", "").strip()
        if bootstrap and ":" not in bootstrap:
            raise ConfigError("ANBANG_BOOTSTRAP_ADMIN must be user:password")
        var_dir = Path(_text(environ, "ANBANG_VAR_DIR"))
        master_key_pkcs11 = _master_key(environ)
        if master_key_pkcs11 is not None and suite == "sm":
            # PKCS#11 defines no SM4 mechanism and SoftHSM implements none: the master key
            # would be AES while every other key is 国密.
            raise ConfigError(
                "ANBANG_CRYPTO_SUITE=sm cannot use a PKCS#11 master key (the module offers no "
                "SM4): use ANBANG_MASTER_KEY=file with suite sm, or suite standard with the module"
            )
        config = cls(
            env=env,
            host=_text(environ, "ANBANG_HOST"),
            port=_int(environ, "ANBANG_PORT", 1, 65535),
            processes=_int(environ, "ANBANG_PROCESSES", 1, 64),
            behind_proxy=_flag(environ, "ANBANG_BEHIND_PROXY"),
            mongodb_uri=environ.get("MONGODB_URI", "").strip(),
            db_name=_text(environ, "ANBANG_DB_NAME"),
            db_port=_int(environ, "ANBANG_DB_PORT", 1, 65535),
            db_path=_var_path(environ, "ANBANG_DB_PATH", var_dir),
            wechat_port=_int(environ, "ANBANG_WECHAT_PORT", 1, 65535),
            wechat_appid=environ.get("WECHAT_APPID", "").strip(),
            wechat_secret=environ.get("WECHAT_SECRET", "").strip(),
            wechat_api_base=environ.get("WECHAT_API_BASE", "").strip().rstrip("/"),
            wechat_push_token=environ.get("WECHAT_PUSH_TOKEN", "").strip(),
            wechat_push_aes_key=environ.get("WECHAT_PUSH_AES_KEY", "").strip(),
            msg_sec_check=_flag(environ, "ANBANG_MSG_SEC_CHECK"),
            wechat_templates=_pairs(environ.get("WECHAT_TEMPLATES", "")),
            db_operation_timeout_ms=_int(environ, "ANBANG_DB_OPERATION_TIMEOUT_MS", 500, 600_000),
            db_max_idle_ms=_int(environ, "ANBANG_DB_MAX_IDLE_MS", 100, 3_600_000),
            master_key_file=_var_path(environ, "ANBANG_MASTER_KEY_FILE", var_dir),
            master_key_pkcs11=master_key_pkcs11,
            pkcs11_pin=_pkcs11_pin(environ) if master_key_pkcs11 else "",
            backup_key_file=_var_path(environ, "ANBANG_BACKUP_KEY_FILE", var_dir),
            crypto_suite=suite,
            audit_export=_var_path(environ, "ANBANG_AUDIT_EXPORT", var_dir),
            bootstrap_admin=bootstrap,
            require_totp=_flag(environ, "ANBANG_REQUIRE_TOTP"),
            demo=_flag(environ, "ANBANG_DEMO"),
            max_body_bytes=_int(environ, "ANBANG_MAX_BODY_BYTES", 1024, 64 << 20),
            shutdown_grace_seconds=_int(environ, "ANBANG_SHUTDOWN_GRACE", 0, 600),
            db_wait_seconds=_int(environ, "ANBANG_DB_WAIT", 0, 600),
            log_level=log_level,
            var_dir=var_dir,
            metrics_host=_text(environ, "ANBANG_METRICS_HOST"),
            metrics_port=_int(environ, "ANBANG_METRICS_PORT", 0, 65535),
            jobs_metrics_port=_int(environ, "ANBANG_JOBS_METRICS_PORT", 0, 65535),
            map_tiles=_tiles(environ),
        )
        config.check()
        return config

    def check(self) -> None:
        """Refuse settings that would be unsafe in production."""
        if not self.production:
            return
        missing = []
        if not self.mongodb_uri:
            missing.append("MONGODB_URI (production never uses the embedded database)")
        if not self.require_totp:
            missing.append("ANBANG_REQUIRE_TOTP=1")
        if not (self.wechat_appid and self.wechat_secret):
            missing.append("WECHAT_APPID and WECHAT_SECRET")
        if missing:
            raise ConfigError("ANBANG_ENV=production needs " + "; ".join(missing))


def describe_variables() -> str:
    """The variables as a Markdown table, for `python -m server config` and docs/operations.md."""
    lines = ["| variable | default | meaning |", "|---|---|---|"]
    lines += [f"| `{v.name}` | `{v.default}` | {v.meaning} |" for v in VARIABLES]
    return "\n".join(lines)
