"""The monitoring files in ops/deploy: every metric the dashboard and the alert rules read is one
the processes expose, with the labels they use, and each alert fires on the samples it should
(alerts_test.yml, promtool's format, run through tests/ops/metrics_promql.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families
from pymongo import monitoring

from server.config import Config
from server.metrics import Metrics
from tests.ops.metrics_promql import (
    Unsupported,
    duration,
    grouping_labels,
    parse,
    run_rule_tests,
    selectors,
)

DEPLOY = Path(__file__).resolve().parents[2] / "ops" / "deploy"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
ALERT_TESTS = DEPLOY / "prometheus" / "alerts_test.yml"
SCRAPE = DEPLOY / "prometheus" / "prometheus.yml"
DASHBOARD = DEPLOY / "grafana" / "anbang.json"
# Labels Prometheus adds to every scraped series (the scrape config's target labels).
TARGET_LABELS = frozenset({"job", "instance", "machine"})


def alert_rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))
    return [rule for group in document["groups"] for rule in group["rules"]]


def dashboard_queries() -> list[tuple[str, str]]:
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (panel["title"], target["expr"].replace("$__rate_interval", "5m"))
        for panel in document["panels"]
        for target in panel.get("targets", [])
    ]


def exercised_exposition() -> dict[str, set[str]]:
    """Every sample name an API and a jobs process expose once each path has run, with the
    label names it carries."""
    api, jobs = Metrics("api", "0.1.0"), Metrics("jobs", "0.1.0")
    api.observe_request("POST", "/mp/v1/checkins", 201, 0.2)
    api.checkin_recorded("late", ["offline"])
    api.sign_in_refused("login", "failed")
    api.sign_in_locked("login")
    listener = api.command_listener()
    took = dt.timedelta(milliseconds=2)
    address = ("127.0.0.1", 27017)
    listener.succeeded(monitoring.CommandSucceededEvent(took, {"ok": 1}, "find", 1, address, 1))
    listener.failed(
        monitoring.CommandFailedEvent(
            took, {"errtype": "AutoReconnect", "errmsg": "gone"}, "insert", 2, address, 2
        )
    )
    jobs.delivery_attempted("wechat", "sent")
    jobs.delivery_reported("success")
    jobs.sweep_scheduled("close_windows", 300)
    jobs.lease_state(True, "acquired")
    jobs.sweep_finished("close_windows", "ok", 0.5, {"missed": 2})
    labels: dict[str, set[str]] = {}
    for metrics in (api, jobs):
        text = metrics.exposition().decode()
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels.setdefault(sample.name, set()).update(sample.labels)
    return labels


def queries() -> list[tuple[str, str]]:
    return [(f"alert {rule['alert']}", rule["expr"]) for rule in alert_rules()] + [
        (f"panel {title!r}", expr) for title, expr in dashboard_queries()
    ]


def test_every_alert_fires_on_the_samples_its_tests_give_and_only_then():
    document = yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))
    assert document["rule_files"] == ["alerts.yml"]
    failures = run_rule_tests(document, alert_rules())
    assert failures == []
    tested = {check["alertname"] for test in document["tests"] for check in test["alert_rule_test"]}
    firing = {
        check["alertname"]
        for test in document["tests"]
        for check in test["alert_rule_test"]
        if check["exp_alerts"]
    }
    every = {rule["alert"] for rule in alert_rules()}
    # Each alert is shown firing at least once, and quiet at least once.
    assert firing == every
    assert tested == every


def test_the_issue_s_alerts_are_all_there_with_a_severity_and_a_text():
    rules = {rule["alert"]: rule for rule in alert_rules()}
    for name in (
        "AnbangSweepOverdue",
        "AnbangJobsLeaseNoHolder",
        "AnbangJobsLeaseLost",
        "AnbangApi5xxRate",
        "AnbangReviewQueueStale",
        "AnbangCheckinLatencyP99",
    ):
        assert name in rules
    for rule in rules.values():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        if "for" in rule:
            assert duration(rule["for"]) > 0


@pytest.mark.parametrize(("where", "expr"), queries())
def test_every_metric_a_query_reads_is_exposed_with_the_labels_it_uses(where, expr):
    exposed = exercised_exposition()
    try:
        tree = parse(expr)
    except Unsupported as exc:
        raise AssertionError(f"{where}: {expr!r} is not readable: {exc}") from None
    used: set[str] = set()
    for selector in selectors(tree):
        assert selector.name in exposed, f"{where} reads {selector.name}, which is not exposed"
        have = exposed[selector.name] | TARGET_LABELS
        used |= have
        for label, _op, _value in selector.matchers:
            assert label in have, f"{where}: {selector.name} has no label {label!r}"
    for label in grouping_labels(tree):
        assert label in used, f"{where} groups by {label!r}, which no series it reads carries"


def test_the_scrape_example_loads_the_rules_and_scrapes_the_default_ports():
    document = yaml.safe_load(SCRAPE.read_text(encoding="utf-8"))
    assert document["rule_files"] == ["alerts.yml"]
    defaults = Config.from_env({})
    targets = {
        job["job_name"]: [t for c in job["static_configs"] for t in c["targets"]]
        for job in document["scrape_configs"]
    }
    assert f"127.0.0.1:{defaults.metrics_port}" in targets["anbang-api"]
    assert targets["anbang-jobs"] == [f"127.0.0.1:{defaults.jobs_metrics_port}"]
    assert defaults.metrics_host == "127.0.0.1"


def test_the_dashboard_has_a_panel_for_each_family_and_well_formed_targets():
    document = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in document["panels"]]
    assert len(ids) == len(set(ids))
    read = " ".join(expr for _title, expr in dashboard_queries())
    for family in (
        "anbang_http_requests_total",
        "anbang_http_request_duration_seconds_bucket",
        "anbang_checkins_total",
        "anbang_checkin_flags_total",
        "anbang_review_queue_depth",
        "anbang_review_queue_oldest_age_seconds",
        "anbang_sweep_runs_total",
        "anbang_sweep_duration_seconds_bucket",
        "anbang_jobs_lease_held",
        "anbang_notifier_deliveries_total",
        "anbang_db_commands_total",
        "anbang_sign_in_failures_total",
        "anbang_sign_in_lockouts_total",
    ):
        assert family in read, f"no panel reads {family}"
    for panel in document["panels"]:
        for target in panel.get("targets", []):
            assert target["refId"] and target["datasource"]["uid"] == "${datasource}"
