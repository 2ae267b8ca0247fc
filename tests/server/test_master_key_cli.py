"""Selecting the master key in a hardware module: ANBANG_MASTER_KEY, the PIN, and the key
ceremony and rotation through `python -m server admin keys` against SoftHSM2."""

from __future__ import annotations

import dataclasses
import re
import subprocess
from pathlib import Path

import pytest

from models.hsm import Pkcs11MasterKey
from models.keys import CANARY_ID
from server.app import open_vault
from server.config import Config, ConfigError, Pkcs11Key, describe_variables
from tests.hsm_support import SoftHsm
from tests.process_support import clean_environment, cli_environment, run_cli

URI = "pkcs11:module=/usr/lib/softhsm/libsofthsm2.so;token=anbang;object=anbang-master"


def pin_file(tmp_path: Path, pin: str, mode: int = 0o600) -> Path:
    path = tmp_path / "pin"
    path.write_text(pin + "\n", encoding="utf-8")
    path.chmod(mode)
    return path


# --- configuration ------------------------------------------------------------------------------


def test_the_key_file_stays_the_default():
    config = Config.from_env({})
    assert config.master_key_pkcs11 is None and config.pkcs11_pin == ""


@pytest.mark.parametrize(
    "uri",
    [
        URI,
        "pkcs11:token=anbang;object=anbang-master;type=secret-key"
        "?module-path=/usr/lib/softhsm/libsofthsm2.so",
        "pkcs11:token=anb%61ng;object=anbang%2Dmaster?module-path=%2Fusr%2Flib%2Fsofthsm"
        "%2Flibsofthsm2.so",
    ],
)
def test_a_pkcs11_uri_names_module_token_and_key(uri):
    config = Config.from_env({"ANBANG_MASTER_KEY": uri, "ANBANG_PKCS11_PIN": "1234"})
    assert config.master_key_pkcs11 == Pkcs11Key(
        Path("/usr/lib/softhsm/libsofthsm2.so"), "anbang", "anbang-master"
    )
    assert config.pkcs11_pin == "1234"


def test_the_pin_comes_from_a_private_file_and_never_shows(tmp_path):
    path = pin_file(tmp_path, "s3cret-pin")
    config = Config.from_env({"ANBANG_MASTER_KEY": URI, "ANBANG_PKCS11_PIN_FILE": str(path)})
    assert config.pkcs11_pin == "s3cret-pin"
    assert "s3cret-pin" not in repr(config)
    assert "s3cret-pin" not in str(config.master_key_pkcs11)


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"ANBANG_MASTER_KEY": "hsm"}, "must be `file` or a `pkcs11:` URI"),
        ({"ANBANG_MASTER_KEY": "pkcs11:token=anbang"}, "needs module=, object="),
        ({"ANBANG_MASTER_KEY": URI + ";slot=3"}, "`slot` is not one of module=, token=, object="),
        ({"ANBANG_MASTER_KEY": URI}, "needs the token's user PIN in ANBANG_PKCS11_PIN_FILE"),
        (
            {"ANBANG_MASTER_KEY": URI, "ANBANG_PKCS11_PIN": "1", "ANBANG_PKCS11_PIN_FILE": "/x"},
            "not both",
        ),
        (
            {"ANBANG_MASTER_KEY": URI, "ANBANG_PKCS11_PIN_FILE": "/nonexistent/pin"},
            "ANBANG_PKCS11_PIN_FILE /nonexistent/pin cannot be read",
        ),
        (
            {"ANBANG_MASTER_KEY": URI, "ANBANG_PKCS11_PIN": "1", "ANBANG_CRYPTO_SUITE": "sm"},
            "ANBANG_CRYPTO_SUITE=sm cannot use a PKCS#11 master key .*no SM4",
        ),
    ],
)
def test_bad_master_key_settings_say_what_to_fix(environ, message):
    with pytest.raises(ConfigError, match=message):
        Config.from_env(environ)


def test_a_pin_in_the_uri_is_refused_without_repeating_it():
    with pytest.raises(ConfigError, match=r"must not carry the PIN") as refused:
        Config.from_env({"ANBANG_MASTER_KEY": URI + "?pin-value=87654321"})
    assert "87654321" not in str(refused.value)


def test_a_pin_file_others_can_read_is_refused(tmp_path):
    path = pin_file(tmp_path, "1234", mode=0o644)
    with pytest.raises(ConfigError, match=r"readable by others .*chmod 600"):
        Config.from_env({"ANBANG_MASTER_KEY": URI, "ANBANG_PKCS11_PIN_FILE": str(path)})


def test_server_config_lists_the_new_variables():
    listed = describe_variables()  # what `python -m server config` prints
    for name in ("ANBANG_MASTER_KEY", "ANBANG_PKCS11_PIN_FILE", "ANBANG_PKCS11_PIN"):
        assert f"| `{name}` |" in listed


# --- the key ceremony and rotation on the command line ------------------------------------------


def run_admin(
    config: Config, softhsm: SoftHsm, label: str, pin: Path, *args: str
) -> subprocess.CompletedProcess[str]:
    env = cli_environment(
        config,
        **softhsm.env(),
        ANBANG_MASTER_KEY=softhsm.uri(label),
        ANBANG_PKCS11_PIN_FILE=str(pin),
    )
    return run_cli("admin", *args, env=env)


@pytest.mark.slow
async def test_key_ceremony_then_rotation_through_the_cli(
    store, hsm_config, clock, softhsm, hsm_label, tmp_path
):
    pin = pin_file(tmp_path, softhsm.pin)

    # The ceremony makes the key on the token.
    made = run_admin(hsm_config, softhsm, hsm_label, pin, "keys", "hsm-create")
    assert made.returncode == 0, made.stderr
    first = re.search(r"created master key (hsm-[0-9a-f]+)", made.stdout).group(1)
    assert "not extractable" in made.stdout

    # Another process opens the vault through the token and writes audited records.
    created = run_admin(
        hsm_config, softhsm, hsm_label, pin, "create-org", "--name", "温州市", "--code", "330300",
        "--kind", "city",
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    vault = await open_vault(hsm_config, store, clock)
    try:
        canary = await store.database["key_vault"].find_one({"_id": CANARY_ID})
        assert canary["kek_id"] == first
        assert await vault.kek_ids_in_use() == {first}
    finally:
        assert isinstance(vault.master, Pkcs11MasterKey)
        vault.master.close()

    # Rotation: nothing to move until a new key is made and configured.
    idle = run_admin(hsm_config, softhsm, hsm_label, pin, "keys", "rotate-master")
    assert idle.returncode == 1 and "keys hsm-create --label NEW" in idle.stderr
    new_label = f"{hsm_label}-2"
    made = run_admin(
        hsm_config, softhsm, hsm_label, pin, "keys", "hsm-create", "--label", new_label
    )
    assert made.returncode == 0, made.stderr
    second = re.search(r"created master key (hsm-[0-9a-f]+)", made.stdout).group(1)
    assert f"set object={new_label}" in made.stdout
    rotated = run_admin(hsm_config, softhsm, new_label, pin, "keys", "rotate-master")
    assert rotated.returncode == 0, rotated.stderr
    assert f"under {second}" in rotated.stdout
    retired = run_admin(hsm_config, softhsm, new_label, pin, "keys", "retire-master", first)
    assert retired.returncode == 0, retired.stderr

    # The old key is gone from the token; the vault opens under the new one alone.
    rotated_config = dataclasses.replace(
        hsm_config,
        master_key_pkcs11=dataclasses.replace(hsm_config.master_key_pkcs11, object=new_label),
    )
    vault = await open_vault(rotated_config, store, clock)
    try:
        assert first not in vault.master.key_ids
        assert await vault.kek_ids_in_use() == {second}
        org = await store.database["orgs"].find_one({"code": "330300"})
        assert org is not None
    finally:
        vault.master.close()


@pytest.mark.slow
def test_cli_errors_name_what_to_fix(hsm_config, softhsm, hsm_label, tmp_path):
    pin = pin_file(tmp_path, "wrong-pin")
    refused = run_admin(hsm_config, softhsm, hsm_label, pin, "keys", "hsm-create")
    assert refused.returncode == 1
    assert "user PIN of token 'anbang-test'" in refused.stderr and "wrong-pin" not in (
        refused.stderr + refused.stdout
    )

    env = clean_environment(ANBANG_VAR_DIR=str(tmp_path / "var"))
    file_mode = run_cli("admin", "keys", "hsm-create", env=env)
    assert file_mode.returncode == 2 and "hsm-create needs ANBANG_MASTER_KEY=pkcs11:" in (
        file_mode.stderr
    )
