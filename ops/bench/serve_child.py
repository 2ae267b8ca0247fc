"""The API process under benchmark: exactly `python -m server serve`, tied to the bench's life."""

from __future__ import annotations

import signal
import sys

from server.__main__ import main
from server.processes import die_with_parent

if __name__ == "__main__":
    # Done here rather than in a preexec_fn: the bench process already runs the database's
    # threads, and code between fork and exec in a threaded parent can deadlock.
    die_with_parent(signal.SIGTERM)
    sys.exit(main(["serve"]))
