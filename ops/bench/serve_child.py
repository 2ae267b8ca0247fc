"""The API process under benchmark: exactly `python -m server serve`, tied to the bench's life."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

from ops.bench.apiserver import COMMANDS_FILE, CommandCounter
from server.__main__ import main
from server.processes import die_with_parent

if __name__ == "__main__":
    # Done here rather than in a preexec_fn: the bench process already runs the database's
    # threads, and code between fork and exec in a threaded parent can deadlock.
    die_with_parent(signal.SIGTERM)
    if os.environ.get(COMMANDS_FILE):
        CommandCounter(Path(os.environ[COMMANDS_FILE])).install()
    sys.exit(main(["serve"]))
