"""What the dashboard's PromQL refers to: metric names, label matchers, grouping labels and
legend labels; and the Grafana variables replaced so that promtool can parse the query."""

from __future__ import annotations

import re
from dataclasses import dataclass

METRIC = re.compile(r"\b(plstm_[a-z0-9_]+)\b")
SELECTOR = re.compile(r"\b(plstm_[a-z0-9_]+)\s*\{([^}]*)\}")
MATCHER = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LEGEND = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
# Grafana's built-in interval variables and the dashboard's own variables
GRAFANA_VARIABLES = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h"}
VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::[a-z]+)?\}|\$([A-Za-z_][A-Za-z0-9_]*)")


@dataclass(frozen=True)
class Query:
    expr: str
    legend: str = ""

    def metrics(self) -> set[str]:
        return set(METRIC.findall(self.expr))

    def matchers(self) -> dict[str, set[str]]:
        """metric -> the labels its selectors match on."""
        out: dict[str, set[str]] = {}
        for metric, body in SELECTOR.findall(self.expr):
            out.setdefault(metric, set()).update(MATCHER.findall(body))
        return out

    def grouping(self) -> set[str]:
        return {
            label.strip()
            for group in GROUPING.findall(self.expr)
            for label in group.split(",")
            if label.strip()
        }

    def legend_labels(self) -> set[str]:
        return set(LEGEND.findall(self.legend))

    def for_promtool(self) -> str:
        """The expression with every variable replaced by a value PromQL accepts (intervals by
        ``1m`` / ``1h``, multi-value variables by the regex ``.*``)."""

        def value(match: re.Match) -> str:
            name = match.group(1) or match.group(2)
            return GRAFANA_VARIABLES.get(name, ".*")

        return VARIABLE.sub(value, self.expr)
