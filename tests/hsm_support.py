"""Fixtures for the master key in a hardware module: a SoftHSM2 token initialised for the session,
and a configuration whose master key is a fresh key on it."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from models.crypto import Suite
from models.hsm import Pkcs11MasterKey
from server.config import Config, Pkcs11Key

SOFTHSM_MODULE = Path("/usr/lib/softhsm/libsofthsm2.so")
TOKEN_LABEL = "anbang-test"
USER_PIN = "4711-user"
SO_PIN = "0815-security-officer"


@dataclass(frozen=True)
class SoftHsm:
    """The session's token: its module, label, PIN and the environment that finds it."""

    module: Path
    token: str
    pin: str
    conf: Path

    def env(self) -> dict[str, str]:
        """For a child process: the same token through the same configuration file."""
        return {"SOFTHSM2_CONF": str(self.conf)}

    def provider(self, label: str, pin: str | None = None) -> Pkcs11MasterKey:
        return Pkcs11MasterKey(
            self.module, self.token, label, self.pin if pin is None else pin, Suite.STANDARD
        )

    def uri(self, label: str) -> str:
        return f"pkcs11:module={self.module};token={self.token};object={label}"


@pytest.fixture(scope="session")
def softhsm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SoftHsm]:
    """A token in a temporary directory, initialised before the module is first loaded (SoftHSM
    reads its configuration once per process)."""
    util = shutil.which("softhsm2-util")
    if util is None or not SOFTHSM_MODULE.is_file():
        # Never a skip: the PKCS#11 provider would otherwise ship untested. `make test`
        # installs the package (Makefile target `hsm`).
        pytest.fail(
            "SoftHSM2 is not installed (softhsm2-util, /usr/lib/softhsm/libsofthsm2.so): run "
            "`make hsm` or `apt-get install softhsm2`",
            pytrace=False,
        )
    root = tmp_path_factory.mktemp("softhsm")
    tokens = root / "tokens"
    tokens.mkdir()
    conf = root / "softhsm2.conf"
    conf.write_text(
        f"directories.tokendir = {tokens}\nobjectstore.backend = file\nlog.level = ERROR\n",
        encoding="utf-8",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SOFTHSM2_CONF", str(conf))
        subprocess.run(
            [
                util,
                "--init-token",
                "--free",
                "--label",
                TOKEN_LABEL,
                "--so-pin",
                SO_PIN,
                "--pin",
                USER_PIN,
            ],
            env={**os.environ, "SOFTHSM2_CONF": str(conf)},
            check=True,
            capture_output=True,
            timeout=60,
        )
        yield SoftHsm(SOFTHSM_MODULE, TOKEN_LABEL, USER_PIN, conf)


@pytest.fixture
def hsm_label() -> str:
    """A label no other test uses: each test has its own master key on the shared token."""
    return f"anbang-master-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def hsm_config(config: Config, softhsm: SoftHsm, hsm_label: str) -> Config:
    """The test's configuration with its master key on the token (not yet created)."""
    return dataclasses.replace(
        config,
        master_key_pkcs11=Pkcs11Key(softhsm.module, softhsm.token, hsm_label),
        pkcs11_pin=softhsm.pin,
    )
