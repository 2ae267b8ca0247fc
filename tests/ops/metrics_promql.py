"""A small PromQL evaluator for the expression shapes ops/deploy/prometheus/alerts.yml and the
Grafana dashboard use, and a runner for promtool's rule-test files (`promtool test rules`).

Debian's `prometheus` package (which ships promtool) is 19 MB to download and 96 MB installed,
with a web UI's JavaScript besides; the tests evaluate the rules here instead. What is covered:
selectors with `=`, `!=`, `=~`, `!~` and ranges; `rate`, `increase`, `histogram_quantile`,
`absent`, `time`; `sum`, `max`, `min`, `count`, `avg`, `topk` with `by`; arithmetic and
comparison between vectors and scalars; `and`/`or`/`unless` with `on`. `rate` extrapolates as
Prometheus does. Anything else is refused with an error, never evaluated wrongly in silence.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

LOOKBACK = 300.0
Labels = frozenset[tuple[str, str]]


class Unsupported(Exception):
    pass


# --- syntax ---------------------------------------------------------------------------------------


@dataclass
class Num:
    value: float


@dataclass
class Selector:
    name: str | None
    matchers: list[tuple[str, str, str]]
    range_s: float | None = None


@dataclass
class Call:
    function: str
    args: list[Any]


@dataclass
class Agg:
    op: str
    by: list[str] | None
    param: Any
    expr: Any


@dataclass
class Bin:
    op: str
    lhs: Any
    rhs: Any
    on: list[str] | None = None


_TOKEN = re.compile(
    r"\s*(?:(?P<dur>\d+[smhdw])(?![a-zA-Z_\d])|(?P<num>\d+(?:\.\d+)?(?:e[+-]?\d+)?)"
    r'|(?P<str>"(?:[^"\\]|\\.)*")|(?P<id>[a-zA-Z_:][a-zA-Z0-9_:]*)'
    r"|(?P<op>==|!=|=~|!~|>=|<=|[-+*/(){}\[\],<>=]))"
)
_PRECEDENCE = {
    "or": 1,
    "and": 2,
    "unless": 2,
    "==": 3,
    "!=": 3,
    ">": 3,
    "<": 3,
    ">=": 3,
    "<=": 3,
    "+": 4,
    "-": 4,
    "*": 5,
    "/": 5,
}
AGGREGATIONS = frozenset({"sum", "max", "min", "count", "avg", "topk"})
FUNCTIONS = frozenset({"rate", "increase", "histogram_quantile", "absent", "time"})
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def duration(text: str) -> float:
    return float(text[:-1]) * _UNITS[text[-1]]


def tokens(text: str) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []
    position = 0
    text = text.strip()
    while position < len(text):
        match = _TOKEN.match(text, position)
        if match is None or match.end() == position:
            raise Unsupported(f"cannot read {text[position:]!r}")
        kind = match.lastgroup
        assert kind is not None
        found.append((kind, match.group(kind)))
        position = match.end()
    return found


class Parser:
    def __init__(self, text: str):
        self.tokens = tokens(text)
        self.at = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.at] if self.at < len(self.tokens) else None

    def next_is(self, *texts: str) -> bool:
        token = self.peek()
        return token is not None and token[1] in texts

    def take(self, expected: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if token is None or (expected is not None and token[1] != expected):
            raise Unsupported(f"expected {expected!r}, found {token!r}")
        self.at += 1
        return token

    def parse(self) -> Any:
        node = self.expression(0)
        if self.peek() is not None:
            raise Unsupported(f"unexpected {self.peek()!r}")
        return node

    def expression(self, floor: int) -> Any:
        lhs = self.unary()
        while True:
            token = self.peek()
            if token is None or token[1] not in _PRECEDENCE or _PRECEDENCE[token[1]] <= floor:
                return lhs
            op = self.take()[1]
            on = None
            if self.next_is("on", "ignoring"):
                if self.take()[1] == "ignoring":
                    raise Unsupported("ignoring()")
                on = self.label_list()
            if self.next_is("bool"):
                raise Unsupported("bool modifier")
            rhs = self.expression(_PRECEDENCE[op])
            lhs = Bin(op, lhs, rhs, on)

    def label_list(self) -> list[str]:
        self.take("(")
        names: list[str] = []
        while self.peek() is not None and not self.next_is(")"):
            names.append(self.take()[1])
            if self.next_is(","):
                self.take()
        self.take(")")
        return names

    def unary(self) -> Any:
        token = self.take()
        kind, text = token
        if text == "(":
            node = self.expression(0)
            self.take(")")
            return node
        if text == "-":
            return Bin("*", Num(-1), self.unary())
        if kind == "num":
            return Num(float(text))
        if kind == "id" and text in AGGREGATIONS:
            by = None
            if self.next_is("by"):
                self.take()
                by = self.label_list()
            self.take("(")
            param = None
            if text == "topk":
                param = self.expression(0)
                self.take(",")
            expr = self.expression(0)
            self.take(")")
            if by is None and self.next_is("by"):
                self.take()
                by = self.label_list()
            return Agg(text, by, param, expr)
        if kind == "id" and text in FUNCTIONS and self.next_is("("):
            self.take("(")
            args = []
            while self.peek() is not None and not self.next_is(")"):
                args.append(self.expression(0))
                if self.next_is(","):
                    self.take()
            self.take(")")
            return Call(text, args)
        if kind == "id" or text == "{":
            name = None if text == "{" else text
            if text == "{":
                self.at -= 1
            matchers: list[tuple[str, str, str]] = []
            if self.next_is("{"):
                self.take()
                while self.peek() is not None and not self.next_is("}"):
                    label = self.take()[1]
                    op = self.take()[1]
                    if op not in ("=", "!=", "=~", "!~"):
                        raise Unsupported(f"matcher {op!r}")
                    raw = self.take()[1]
                    matchers.append((label, op, raw[1:-1].replace('\\"', '"')))
                    if self.next_is(","):
                        self.take()
                self.take("}")
            selector = Selector(name, matchers)
            if self.next_is("["):
                self.take()
                selector.range_s = duration(self.take()[1])
                self.take("]")
            return selector
        raise Unsupported(f"unexpected {token!r}")


def parse(text: str) -> Any:
    return Parser(text).parse()


def selectors(node: Any) -> Iterable[Selector]:
    """Every selector in an expression (what names and labels it reads)."""
    if isinstance(node, Selector):
        yield node
    elif isinstance(node, Call):
        for arg in node.args:
            yield from selectors(arg)
    elif isinstance(node, Agg):
        yield from selectors(node.expr)
    elif isinstance(node, Bin):
        yield from selectors(node.lhs)
        yield from selectors(node.rhs)


def grouping_labels(node: Any) -> Iterable[str]:
    """Labels named in `by (...)` and `on (...)`."""
    if isinstance(node, Agg):
        yield from node.by or ()
        yield from grouping_labels(node.expr)
    elif isinstance(node, Call):
        for arg in node.args:
            yield from grouping_labels(arg)
    elif isinstance(node, Bin):
        yield from node.on or ()
        yield from grouping_labels(node.lhs)
        yield from grouping_labels(node.rhs)


# --- evaluation -----------------------------------------------------------------------------------


@dataclass
class Series:
    labels: dict[str, str]
    points: list[tuple[float, float]] = field(default_factory=list)


def _matches(labels: dict[str, str], selector: Selector) -> bool:
    if selector.name is not None and labels.get("__name__") != selector.name:
        return False
    for label, op, wanted in selector.matchers:
        have = labels.get(label, "")
        if op == "=" and have != wanted:
            return False
        if op == "!=" and have == wanted:
            return False
        if op == "=~" and not re.fullmatch(wanted, have):
            return False
        if op == "!~" and re.fullmatch(wanted, have):
            return False
    return True


def _key(labels: dict[str, str], keep: Iterable[str] | None = None) -> Labels:
    if keep is None:
        return frozenset((k, v) for k, v in labels.items() if k != "__name__")
    wanted = set(keep)
    return frozenset((k, v) for k, v in labels.items() if k in wanted)


def _extrapolated(points: list[tuple[float, float]], start: float, end: float, rate: bool) -> float:
    """Prometheus's extrapolatedRate for counters."""
    first_t, first_v = points[0]
    last_t, last_v = points[-1]
    result = last_v - first_v
    previous = first_v
    for _, v in points[1:]:
        if v < previous:
            result += previous  # a counter reset
        previous = v
    sampled = last_t - first_t
    average = sampled / (len(points) - 1)
    to_start, to_end = first_t - start, end - last_t
    if result > 0 and first_v >= 0:
        to_zero = sampled * (first_v / result)
        to_start = min(to_start, to_zero)
    threshold = average * 1.1
    interval = sampled
    interval += to_start if to_start < threshold else average / 2
    interval += to_end if to_end < threshold else average / 2
    result *= interval / sampled
    return result / (end - start) if rate else result


def _bucket_quantile(q: float, buckets: list[tuple[float, float]]) -> float:
    buckets.sort()
    if len(buckets) < 2 or not math.isinf(buckets[-1][0]):
        return math.nan
    total = buckets[-1][1]
    if total == 0:
        return math.nan
    rank = q * total
    index = next(i for i, (_, count) in enumerate(buckets) if count >= rank)
    if index == len(buckets) - 1:
        return buckets[-2][0]
    start, below = (0.0, 0.0) if index == 0 else buckets[index - 1]
    end, count = buckets[index]
    if index == 0 and end <= 0:
        return end
    return start + (end - start) * ((rank - below) / (count - below))


class Evaluator:
    def __init__(self, series: list[Series]):
        self.series = series

    def instant(self, expr: Any, t: float) -> list[tuple[dict[str, str], float]] | float:
        if isinstance(expr, Num):
            return expr.value
        if isinstance(expr, Selector):
            if expr.range_s is not None:
                raise Unsupported("a range vector where an instant one is needed")
            found = []
            for s in self.series:
                if not _matches(s.labels, expr):
                    continue
                recent = [p for p in s.points if t - LOOKBACK < p[0] <= t]
                if recent:
                    found.append((dict(s.labels), recent[-1][1]))
            return found
        if isinstance(expr, Call):
            return self.call(expr, t)
        if isinstance(expr, Agg):
            return self.aggregate(expr, t)
        if isinstance(expr, Bin):
            return self.binary(expr, t)
        raise Unsupported(repr(expr))

    def call(self, expr: Call, t: float) -> Any:
        if expr.function == "time":
            return t
        if expr.function in ("rate", "increase"):
            (selector,) = expr.args
            if not isinstance(selector, Selector) or selector.range_s is None:
                raise Unsupported("rate of anything but a range selector")
            start = t - selector.range_s
            out = []
            for s in self.series:
                if not _matches(s.labels, selector):
                    continue
                points = [p for p in s.points if start < p[0] <= t]
                if len(points) >= 2:
                    value = _extrapolated(points, start, t, expr.function == "rate")
                    labels = {k: v for k, v in s.labels.items() if k != "__name__"}
                    out.append((labels, value))
            return out
        if expr.function == "histogram_quantile":
            q = self.instant(expr.args[0], t)
            vector = self.instant(expr.args[1], t)
            assert isinstance(q, float) and isinstance(vector, list)
            groups: dict[Labels, list[tuple[float, float]]] = {}
            for labels, value in vector:
                le = float(labels["le"])
                groups.setdefault(_key({k: v for k, v in labels.items() if k != "le"}), []).append(
                    (le, value)
                )
            return [(dict(k), _bucket_quantile(q, b)) for k, b in groups.items()]
        if expr.function == "absent":
            (selector,) = expr.args
            if self.instant(selector, t):
                return []
            labels = {k: v for k, op, v in getattr(selector, "matchers", []) if op == "="}
            return [(labels, 1.0)]
        raise Unsupported(expr.function)

    def aggregate(self, expr: Agg, t: float) -> list[tuple[dict[str, str], float]]:
        vector = self.instant(expr.expr, t)
        if not isinstance(vector, list):
            raise Unsupported("aggregation of a scalar")
        if expr.op == "topk":
            k = self.instant(expr.param, t)
            assert isinstance(k, float)
            return sorted(vector, key=lambda item: -item[1])[: int(k)]
        groups: dict[Labels, list[float]] = {}
        for labels, value in vector:
            groups.setdefault(_key(labels, expr.by or ()), []).append(value)
        combine = {
            "sum": sum,
            "max": max,
            "min": min,
            "count": len,
            "avg": lambda values: sum(values) / len(values),
        }[expr.op]
        return [(dict(k), float(combine(values))) for k, values in groups.items()]

    def binary(self, expr: Bin, t: float) -> Any:
        lhs, rhs = self.instant(expr.lhs, t), self.instant(expr.rhs, t)
        op = expr.op
        if op in ("and", "or", "unless"):
            assert isinstance(lhs, list) and isinstance(rhs, list)
            right = {_key(labels, expr.on) for labels, _ in rhs}
            if op == "and":
                return [item for item in lhs if _key(item[0], expr.on) in right]
            if op == "unless":
                return [item for item in lhs if _key(item[0], expr.on) not in right]
            left = {_key(labels, expr.on) for labels, _ in lhs}
            return lhs + [item for item in rhs if _key(item[0], expr.on) not in left]
        compare = op in ("==", "!=", ">", "<", ">=", "<=")

        def apply(a: float, b: float) -> float | bool:
            return {
                "+": lambda: a + b,
                "-": lambda: a - b,
                "*": lambda: a * b,
                "/": lambda: a / b if b else (math.nan if a == 0 else math.copysign(math.inf, a)),
                "==": lambda: a == b,
                "!=": lambda: a != b,
                ">": lambda: a > b,
                "<": lambda: a < b,
                ">=": lambda: a >= b,
                "<=": lambda: a <= b,
            }[op]()

        if isinstance(lhs, float) and isinstance(rhs, float):
            if compare:
                raise Unsupported("comparison of two scalars without bool")
            return float(apply(lhs, rhs))
        if isinstance(lhs, list) and isinstance(rhs, float):
            pairs = [(labels, value, value, rhs) for labels, value in lhs]
        elif isinstance(lhs, float) and isinstance(rhs, list):
            pairs = [(labels, value, lhs, value) for labels, value in rhs]
        else:
            assert isinstance(lhs, list) and isinstance(rhs, list)
            right: dict[Labels, float] = {}
            for labels, value in rhs:
                key = _key(labels, expr.on)
                if key in right:
                    raise Unsupported("many-to-one matching")
                right[key] = value
            pairs = [
                (labels, value, value, right[_key(labels, expr.on)])
                for labels, value in lhs
                if _key(labels, expr.on) in right
            ]
        out = []
        for labels, kept, a, b in pairs:
            result = apply(a, b)
            if compare:
                if result:
                    out.append((labels, kept))
            else:
                out.append(({k: v for k, v in labels.items() if k != "__name__"}, float(result)))
        return out


# --- promtool's series notation and rule tests ---------------------------------------------------


_SERIES = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)?(?:\{(?P<labels>.*)\})?$")
_LABEL = re.compile(r'\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"((?:[^"\\]|\\.)*)"\s*,?')
_EXPANDING = re.compile(r"^(?P<start>-?[\d.e+]+)(?P<sign>[+-])(?P<step>[\d.e+]+)x(?P<n>\d+)$")
_REPEAT = re.compile(r"^(?P<value>-?[\d.e+]+|_)x(?P<n>\d+)$")


def series_labels(text: str) -> dict[str, str]:
    match = _SERIES.match(text.strip())
    if match is None:
        raise Unsupported(f"series {text!r}")
    labels = dict(_LABEL.findall(match.group("labels") or ""))
    if match.group("name"):
        labels["__name__"] = match.group("name")
    return labels


def expand(values: str) -> list[float | None]:
    """promtool's values: `1 2 _ 3`, `0+10x5` (six values), `5x3` (four), `_x2`."""
    out: list[float | None] = []
    for item in values.split():
        if item == "_":
            out.append(None)
        elif match := _EXPANDING.match(item):
            start, step = float(match["start"]), float(match["step"])
            step = step if match["sign"] == "+" else -step
            out.extend(start + step * i for i in range(int(match["n"]) + 1))
        elif match := _REPEAT.match(item):
            value = None if match["value"] == "_" else float(match["value"])
            out.extend([value] * (int(match["n"]) + 1))
        else:
            out.append(float(item))
    return out


def _template(text: str, labels: dict[str, str]) -> str:
    return re.sub(
        r"\{\{\s*\$labels\.([a-zA-Z_][a-zA-Z0-9_]*)\s*\}\}", lambda m: labels.get(m[1], ""), text
    )


def firing_alerts(
    rules: list[dict[str, Any]], series: list[Series], eval_time: float, step: float
) -> dict[str, list[tuple[dict[str, str], dict[str, str]]]]:
    """Each alert's firing instances at `eval_time` as (labels, annotations), evaluating every
    `step` seconds from 0 as Prometheus does, so `for` counts from when each became active."""
    evaluator = Evaluator(series)
    active: dict[tuple[str, Labels], float] = {}
    firing: dict[str, list[tuple[dict[str, str], dict[str, str]]]] = {}
    t = 0.0
    while t <= eval_time + 1e-9:
        firing = {}
        seen: set[tuple[str, Labels]] = set()
        for rule in rules:
            result = evaluator.instant(parse(rule["expr"]), t)
            if not isinstance(result, list):
                raise Unsupported(f"{rule['alert']}: a scalar alert expression")
            hold = duration(rule["for"]) if "for" in rule else 0.0
            for labels, _value in result:
                labels = {k: v for k, v in labels.items() if k != "__name__"}
                labels.update(rule.get("labels", {}))
                key = (rule["alert"], _key(labels))
                seen.add(key)
                since = active.setdefault(key, t)
                if t - since >= hold:
                    annotations = {
                        k: _template(v, labels) for k, v in rule.get("annotations", {}).items()
                    }
                    firing.setdefault(rule["alert"], []).append((labels, annotations))
        active = {key: since for key, since in active.items() if key in seen}
        t += step
    return firing


def run_rule_tests(document: dict[str, Any], rules: list[dict[str, Any]]) -> list[str]:
    """Run a promtool rule-test document; the list of mismatches (empty: every test passed)."""
    failures: list[str] = []
    step = duration(document.get("evaluation_interval", "1m"))
    for number, test in enumerate(document["tests"]):
        interval = duration(test.get("interval", "1m"))
        series = []
        for entry in test["input_series"]:
            points = [
                (i * interval, v)
                for i, v in enumerate(expand(str(entry["values"])))
                if v is not None
            ]
            series.append(Series(series_labels(entry["series"]), points))
        for check in test["alert_rule_test"]:
            eval_time = duration(check["eval_time"])
            got = firing_alerts(rules, series, eval_time, step).get(check["alertname"], [])
            want = [
                (dict(a.get("exp_labels", {})), dict(a.get("exp_annotations", {})))
                for a in check.get("exp_alerts", [])
            ]
            for expected_labels, _ in want:
                expected_labels["alertname"] = check["alertname"]
            got_labelled = [
                ({**labels, "alertname": check["alertname"]}, notes) for labels, notes in got
            ]
            key = lambda pair: sorted(pair[0].items())  # noqa: E731
            if sorted(got_labelled, key=key) != sorted(want, key=key):
                failures.append(
                    f"test {number} ({test.get('name', '')}), {check['alertname']} at "
                    f"{check['eval_time']}: expected {want}, got {got_labelled}"
                )
    return failures
