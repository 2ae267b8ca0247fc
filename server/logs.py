"""Structured JSON logging: one object per line; fields come from `extra={"fields": {...}}`."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import logging
import logging.handlers
import queue
import sys


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": dt.datetime.fromtimestamp(record.created, dt.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        fields = getattr(record, "fields", None)
        if isinstance(fields, dict):
            entry.update(fields)
        if record.exc_info and record.exc_info[0] is not None:
            # The exception's type only: its message could quote personal data.
            entry["exception"] = record.exc_info[0].__name__
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure(level: str, process: str) -> None:
    """JSON lines on stderr, written by a background thread: a slow reader of the log (a pipe,
    journald) must never stall the event loop."""
    output = logging.StreamHandler(sys.stderr)
    output.setFormatter(JsonFormatter())
    records: queue.SimpleQueue[logging.LogRecord] = queue.SimpleQueue()
    listener = logging.handlers.QueueListener(records, output, respect_handler_level=False)
    listener.start()
    atexit.register(listener.stop)  # flushes what is queued when the process ends
    root = logging.getLogger()
    root.handlers[:] = [_FieldPreservingQueueHandler(records)]
    root.setLevel(level)
    # Tornado's own access log duplicates ours, and its messages may include a query string.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("anbang").info("process starting", extra={"fields": {"process": process}})


class _FieldPreservingQueueHandler(logging.handlers.QueueHandler):
    """Queues the record as it is; the stock handler flattens it and would drop `fields`."""

    def prepare(self, record: logging.LogRecord) -> logging.LogRecord:
        return record
