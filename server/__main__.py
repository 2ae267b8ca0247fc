"""Command line: `python -m server` and its sub-commands (serve, jobs, db, dev, backup, ...)."""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import sys

from server.admin_cli import add_admin_commands
from server.audit_cli import add_audit_commands
from server.backup_cli import add_backup_commands
from server.config import Config, ConfigError, describe_variables
from server.logs import configure
from server.rules_doc import describe_rules


def _moment(raw: str) -> dt.datetime:
    """An ISO-8601 time with its offset, for `--now`."""
    try:
        moment = dt.datetime.fromisoformat(raw)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an ISO-8601 time: {raw!r}") from None
    if moment.tzinfo is None:
        raise argparse.ArgumentTypeError("needs an offset, e.g. 2026-11-24T08:00:00+08:00")
    return moment


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the API")
    serve.add_argument("--processes", type=int, default=None, help="worker processes")

    jobs = commands.add_parser("jobs", help="run the jobs process (sweeps under a lease)")
    jobs_commands = jobs.add_subparsers(dest="jobs_command")
    jobs_commands.add_parser("list", help="name the sweeps")
    once = jobs_commands.add_parser("run-once", help="run one sweep once, outside the lease")
    once.add_argument("sweep", help="a sweep name, or `all`")
    once.add_argument("--now", type=_moment, default=None, help="ISO-8601 time with offset")

    commands.add_parser("db", help="run the embedded development database")
    commands.add_parser("dev", help="run everything for development (what `make run` does)")
    commands.add_parser("wechat-standin", help="run the local WeChat API stand-in")
    commands.add_parser("config", help="print the environment variables and their defaults")
    commands.add_parser("rules", help="print the statutory rules with their sources")
    admin = commands.add_parser("admin", help="organisation tree and staff accounts")
    add_admin_commands(admin)
    audit = commands.add_parser("audit", help="the audit log")
    add_audit_commands(audit)
    backup = commands.add_parser("backup", help="sealed backups: keygen, export, restore, compare")
    add_backup_commands(backup)
    demo = commands.add_parser("demo", help="demo data")
    demo.add_argument("action", choices=["seed"])
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "config":
        print(describe_variables())
        return 0
    if args.command == "rules":
        print(describe_rules())
        return 0
    try:
        config = Config.from_env()
    except ConfigError as exc:
        print(f"anbang: configuration error: {exc}", file=sys.stderr)
        return 2
    configure(config.log_level, args.command)

    try:
        if args.command == "serve":
            from server.serving import serve

            return serve(config, args.processes)
        if args.command == "jobs":
            from server.jobs import jobs_main

            now = getattr(args, "now", None) or dt.datetime.now(dt.UTC)
            return jobs_main(config, args.jobs_command, getattr(args, "sweep", None), now)
        if args.command == "db":
            from server.embedded_db import run_embedded_database

            if config.production:
                raise ConfigError("the embedded database never runs in production")
            asyncio.run(run_embedded_database("127.0.0.1", config.db_port, config.db_path))
            return 0
        if args.command == "dev":
            from server.devrun import run_development

            return run_development(config)
        if args.command == "wechat-standin":
            from server.wechat_standin import run_standin

            if config.production:
                raise ConfigError("the WeChat stand-in never runs in production")
            asyncio.run(run_standin(config.wechat_port))
            return 0
        if args.command == "admin":
            from server.admin_cli import run_admin

            return asyncio.run(run_admin(config, args))
        if args.command == "audit":
            from server.audit_cli import run_audit

            return asyncio.run(run_audit(config, args))
        if args.command == "backup":
            from server.backup_cli import run_backup

            return asyncio.run(run_backup(config, args))
        if args.command == "demo":
            from server.demo import seed_demo

            result = asyncio.run(seed_demo(config))
            print(json.dumps(result, ensure_ascii=False))
            return 0
    except ConfigError as exc:
        print(f"anbang: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        # Start-up failures the operator must act on carry a plain message; say it and stop.
        print(f"anbang: {args.command} failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
