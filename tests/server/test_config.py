"""Configuration: the documented development defaults, production refusals and bad values."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.config import VARIABLES, Config, ConfigError, describe_variables
from tests.process_support import clean_environment, run_cli

# Everything a production deployment must set; each test removes what it is about.
PRODUCTION = {
    "ANBANG_ENV": "production",
    "MONGODB_URI": "mongodb://db1.example.internal,db2.example.internal/?replicaSet=rs0",
    "ANBANG_REQUIRE_TOTP": "1",
    "WECHAT_APPID": "wx0123456789abcdef",
    "WECHAT_SECRET": "0123456789abcdef0123456789abcdef",
}


# --- the development defaults of API.md ---------------------------------------------------------


def test_defaults_match_the_documented_development_setup():
    config = Config.from_env({})
    assert config.env == "development"
    assert not config.production
    assert config.host == "127.0.0.1"
    assert config.port == 8000
    assert config.embedded_database
    assert config.db_port == 27018
    assert config.database_uri == "mongodb://127.0.0.1:27018/?retryWrites=false"
    assert config.db_path == Path("var/db")
    assert config.wechat_port == 8010
    assert config.wechat_base_url == "http://127.0.0.1:8010"
    assert config.master_key_file == Path("var/keys/master.key")
    assert config.var_dir == Path("var")
    assert config.demo is True
    assert config.require_totp is False
    assert config.processes == 1


def test_blank_values_mean_the_default():
    config = Config.from_env({"ANBANG_PORT": "  ", "ANBANG_DEMO": "", "ANBANG_DB_PORT": ""})
    assert config.port == 8000
    assert config.demo is True
    assert config.database_uri == "mongodb://127.0.0.1:27018/?retryWrites=false"


def test_overrides_take_effect():
    config = Config.from_env(
        {
            "ANBANG_PORT": "9100",
            "ANBANG_DB_PORT": "27999",
            "ANBANG_WECHAT_PORT": "9110",
            "ANBANG_MASTER_KEY_FILE": "/srv/keys/kek",
            "ANBANG_DEMO": "0",
            "ANBANG_LOG_LEVEL": "debug",
        }
    )
    assert config.port == 9100
    assert config.database_uri == "mongodb://127.0.0.1:27999/?retryWrites=false"
    assert config.wechat_base_url == "http://127.0.0.1:9110"
    assert config.master_key_file == Path("/srv/keys/kek")
    assert config.demo is False
    assert config.log_level == "DEBUG"


def test_mongodb_uri_replaces_the_embedded_database():
    uri = "mongodb://db.example.internal:27017/?replicaSet=rs0"
    config = Config.from_env({"MONGODB_URI": f" {uri} "})
    assert not config.embedded_database
    assert config.database_uri == uri


def test_wechat_api_base_replaces_the_standin():
    config = Config.from_env({"WECHAT_API_BASE": "https://api.weixin.qq.com/"})
    assert config.wechat_base_url == "https://api.weixin.qq.com"


def test_config_command_lists_every_variable_with_its_default():
    table = describe_variables()
    for variable in VARIABLES:
        assert f"| `{variable.name}` | `{variable.default}` |" in table
    answer = run_cli("config", env=clean_environment())
    assert answer.returncode == 0, answer.stderr
    assert "| `ANBANG_PORT` | `8000` |" in answer.stdout
    assert "| `ANBANG_MASTER_KEY_FILE` | `var/keys/master.key` |" in answer.stdout


# --- production refuses unsafe settings ---------------------------------------------------------


def test_production_with_every_setting_starts():
    config = Config.from_env(PRODUCTION)
    assert config.production
    assert not config.embedded_database
    assert config.require_totp


def test_production_refuses_to_start_without_mongodb_uri():
    settings = {k: v for k, v in PRODUCTION.items() if k != "MONGODB_URI"}
    with pytest.raises(ConfigError) as refused:
        Config.from_env(settings)
    assert "MONGODB_URI" in str(refused.value)


@pytest.mark.parametrize(
    ("missing", "named"),
    [
        ("ANBANG_REQUIRE_TOTP", "ANBANG_REQUIRE_TOTP=1"),
        ("WECHAT_APPID", "WECHAT_APPID"),
        ("WECHAT_SECRET", "WECHAT_SECRET"),
    ],
)
def test_production_refuses_to_start_without_strict_settings(missing, named):
    settings = {k: v for k, v in PRODUCTION.items() if k != missing}
    with pytest.raises(ConfigError) as refused:
        Config.from_env(settings)
    assert named in str(refused.value)


def test_production_lists_everything_missing_at_once():
    with pytest.raises(ConfigError) as refused:
        Config.from_env({"ANBANG_ENV": "production"})
    message = str(refused.value)
    for named in ("MONGODB_URI", "ANBANG_REQUIRE_TOTP", "WECHAT_APPID", "WECHAT_SECRET"):
        assert named in message


def test_serve_in_production_without_mongodb_uri_exits_2_with_a_clear_message():
    settings = {k: v for k, v in PRODUCTION.items() if k != "MONGODB_URI"}
    answer = run_cli("serve", env=clean_environment(**settings))
    assert answer.returncode == 2
    assert "configuration error" in answer.stderr
    assert "MONGODB_URI" in answer.stderr
    assert "Traceback" not in answer.stderr
    assert answer.stdout == ""


def test_embedded_database_never_runs_in_production():
    answer = run_cli("db", env=clean_environment(**PRODUCTION))
    assert answer.returncode == 2
    assert "embedded database never runs in production" in answer.stderr
    assert "Traceback" not in answer.stderr


def test_standin_never_runs_in_production():
    answer = run_cli("wechat-standin", env=clean_environment(**PRODUCTION))
    assert answer.returncode == 2
    assert "stand-in never runs in production" in answer.stderr


# --- bad values name the variable ---------------------------------------------------------------

NUMBERS = [
    "ANBANG_PORT",
    "ANBANG_PROCESSES",
    "ANBANG_DB_PORT",
    "ANBANG_WECHAT_PORT",
    "ANBANG_MAX_BODY_BYTES",
    "ANBANG_SHUTDOWN_GRACE",
    "ANBANG_DB_WAIT",
]
FLAGS = ["ANBANG_BEHIND_PROXY", "ANBANG_REQUIRE_TOTP", "ANBANG_DEMO"]


@pytest.mark.parametrize("name", NUMBERS)
@pytest.mark.parametrize("raw", ["eighty", "80.5", "0x50"])
def test_a_number_that_is_not_whole_names_its_variable(name, raw):
    with pytest.raises(ConfigError) as refused:
        Config.from_env({name: raw})
    assert name in str(refused.value)
    assert raw in str(refused.value)


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ANBANG_PORT", "0"),
        ("ANBANG_PORT", "65536"),
        ("ANBANG_DB_PORT", "-1"),
        ("ANBANG_WECHAT_PORT", "70000"),
        ("ANBANG_PROCESSES", "0"),
        ("ANBANG_PROCESSES", "65"),
        ("ANBANG_MAX_BODY_BYTES", "10"),
        ("ANBANG_SHUTDOWN_GRACE", "601"),
        ("ANBANG_DB_WAIT", "-5"),
    ],
)
def test_a_number_out_of_range_names_its_variable(name, raw):
    with pytest.raises(ConfigError) as refused:
        Config.from_env({name: raw})
    assert name in str(refused.value)
    assert "between" in str(refused.value)


@pytest.mark.parametrize("name", FLAGS)
def test_a_flag_that_is_not_on_or_off_names_its_variable(name):
    with pytest.raises(ConfigError) as refused:
        Config.from_env({name: "maybe"})
    assert name in str(refused.value)


@pytest.mark.parametrize("name", FLAGS)
@pytest.mark.parametrize(("raw", "expected"), [("1", True), ("YES", True), ("off", False)])
def test_flags_accept_the_usual_spellings(name, raw, expected):
    config = Config.from_env({name: raw, "ANBANG_ENV": "development"})
    field = {
        "ANBANG_BEHIND_PROXY": "behind_proxy",
        "ANBANG_REQUIRE_TOTP": "require_totp",
        "ANBANG_DEMO": "demo",
    }[name]
    assert getattr(config, field) is expected


@pytest.mark.parametrize(
    ("name", "raw"),
    [
        ("ANBANG_ENV", "staging"),
        ("ANBANG_LOG_LEVEL", "verbose"),
        ("ANBANG_BOOTSTRAP_ADMIN", "admin-without-password"),
    ],
)
def test_other_bad_values_name_their_variable(name, raw):
    with pytest.raises(ConfigError) as refused:
        Config.from_env({name: raw})
    assert name in str(refused.value)


def test_a_bad_port_stops_the_cli_with_exit_2_naming_the_variable():
    answer = run_cli("serve", env=clean_environment(ANBANG_PORT="http"))
    assert answer.returncode == 2
    assert "ANBANG_PORT" in answer.stderr
    assert "Traceback" not in answer.stderr
