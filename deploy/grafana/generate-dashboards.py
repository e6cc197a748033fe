#!/usr/bin/env python3
"""Writes the Grafana dashboards in deploy/grafana/dashboards/ (the JSON files are the
deliverable: Grafana loads them through deploy/grafana/provisioning/dashboards/).

    python3 deploy/grafana/generate-dashboards.py            # rewrite the JSON files
    python3 deploy/grafana/generate-dashboards.py --check    # exit 1 if they are out of date

Every query uses the Prometheus data source with the fixed uid `prometheus` from
deploy/grafana/provisioning/datasources/datasources.yml, and only metric names that
orchestration-api and orchestration-worker export (core/src/telemetry.rs);
scripts/check-deploy.sh verifies both.
"""

import json
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "dashboards")

DS = {"type": "prometheus", "uid": "prometheus"}
SCHEMA_VERSION = 39


# --------------------------------------------------------------------------- building blocks


class Dashboard:
    def __init__(self, uid, title, description, tags, time_from="now-6h", variables=()):
        self.uid = uid
        self.title = title
        self.description = description
        self.tags = ["orchestration"] + list(tags)
        self.time_from = time_from
        self.variables = list(variables)
        self.panels = []
        self._next_id = 1
        self._x = 0
        self._y = 0
        self._row_h = 0

    def _place(self, w, h):
        if self._x + w > 24:
            self._x = 0
            self._y += self._row_h
            self._row_h = 0
        pos = {"h": h, "w": w, "x": self._x, "y": self._y}
        self._x += w
        self._row_h = max(self._row_h, h)
        return pos

    def row(self, title):
        if self._x:
            self._x = 0
            self._y += self._row_h
            self._row_h = 0
        self.panels.append(
            {
                "type": "row",
                "id": self._id(),
                "title": title,
                "collapsed": False,
                "gridPos": {"h": 1, "w": 24, "x": 0, "y": self._y},
                "panels": [],
            }
        )
        self._y += 1

    def _id(self):
        i = self._next_id
        self._next_id += 1
        return i

    def add(self, panel, w, h):
        panel["id"] = self._id()
        panel["gridPos"] = self._place(w, h)
        self.panels.append(panel)

    def to_json(self):
        return {
            "annotations": {
                "list": [
                    {
                        "builtIn": 1,
                        "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                        "enable": True,
                        "hide": True,
                        "iconColor": "rgba(0, 211, 255, 1)",
                        "name": "Annotations & Alerts",
                        "type": "dashboard",
                    }
                ]
            },
            "description": self.description,
            "editable": True,
            "fiscalYearStartMonth": 0,
            "graphTooltip": 1,
            "id": None,
            "links": [
                {
                    "asDropdown": True,
                    "icon": "external link",
                    "includeVars": False,
                    "keepTime": True,
                    "tags": ["orchestration"],
                    "targetBlank": False,
                    "title": "Orchestration dashboards",
                    "tooltip": "",
                    "type": "dashboards",
                    "url": "",
                }
            ],
            "panels": self.panels,
            "refresh": "30s",
            "schemaVersion": SCHEMA_VERSION,
            "tags": self.tags,
            "templating": {"list": self.variables},
            "time": {"from": self.time_from, "to": "now"},
            "timepicker": {},
            "timezone": "browser",
            "title": self.title,
            "uid": self.uid,
            "version": 1,
            "weekStart": "",
        }


def variable(name, label, metric, label_name):
    query = f"label_values({metric}, {label_name})"
    return {
        "name": name,
        "label": label,
        "type": "query",
        "datasource": DS,
        "definition": query,
        "query": {"qryType": 1, "query": query, "refId": "PrometheusVariableQueryEditor-VariableQuery"},
        "refresh": 2,
        "includeAll": True,
        "multi": True,
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
        "options": [],
        "regex": "",
        "skipUrlSync": False,
        "sort": 1,
        "hide": 0,
    }


def target(expr, legend="__auto", ref="A", instant=False, fmt="time_series", interval=None):
    t = {
        "datasource": DS,
        "editorMode": "code",
        "expr": expr,
        "legendFormat": legend,
        "range": not instant,
        "instant": instant,
        "format": fmt,
        "refId": ref,
    }
    if interval:
        t["interval"] = interval
    return t


def targets(*pairs, **kw):
    """(expr, legend) pairs -> targets with refIds A, B, C, ..."""
    return [target(e, l, ref=chr(ord("A") + i), **kw) for i, (e, l) in enumerate(pairs)]


def thresholds(*steps):
    """steps: (value or None, color)."""
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for v, c in steps]}


GREEN = ((None, "green"),)


def timeseries(title, tgts, unit="short", description="", stack=False, bars=False,
               min_=None, max_=None, axis_label="", decimals=None, interval=None,
               legend_calcs=("mean", "max", "lastNotNull")):
    defaults = {
        "color": {"mode": "palette-classic"},
        "custom": {
            "axisBorderShow": False,
            "axisCenteredZero": False,
            "axisColorMode": "text",
            "axisLabel": axis_label,
            "axisPlacement": "auto",
            "barAlignment": 0,
            "drawStyle": "bars" if bars else "line",
            "fillOpacity": 80 if bars else (25 if stack else 10),
            "gradientMode": "none",
            "hideFrom": {"legend": False, "tooltip": False, "viz": False},
            "insertNulls": False,
            "lineInterpolation": "linear",
            "lineWidth": 1,
            "pointSize": 4,
            "scaleDistribution": {"type": "linear"},
            "showPoints": "never",
            "spanNulls": False,
            "stacking": {"group": "A", "mode": "normal" if stack else "none"},
            "thresholdsStyle": {"mode": "off"},
        },
        "mappings": [],
        "thresholds": thresholds(*GREEN),
        "unit": unit,
    }
    if min_ is not None:
        defaults["min"] = min_
    if max_ is not None:
        defaults["max"] = max_
    if decimals is not None:
        defaults["decimals"] = decimals
    p = {
        "type": "timeseries",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "legend": {
                "calcs": list(legend_calcs),
                "displayMode": "table",
                "placement": "bottom",
                "showLegend": True,
            },
            "tooltip": {"mode": "multi", "sort": "desc"},
        },
        "targets": tgts,
    }
    if interval:
        p["interval"] = interval
    return p


def stat(title, tgts, unit="short", description="", steps=GREEN, decimals=None,
         color_mode="value", graph=True):
    defaults = {
        "color": {"mode": "thresholds"},
        "mappings": [],
        "thresholds": thresholds(*steps),
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "stat",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "colorMode": color_mode,
            "graphMode": "area" if graph else "none",
            "justifyMode": "auto",
            "orientation": "auto",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showPercentChange": False,
            "textMode": "auto",
            "wideLayout": True,
        },
        "targets": tgts,
    }


def bargauge(title, tgts, unit="short", description="", decimals=None):
    defaults = {
        "color": {"mode": "continuous-BlYlRd"},
        "mappings": [],
        "min": 0,
        "thresholds": thresholds(*GREEN),
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    return {
        "type": "bargauge",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "displayMode": "gradient",
            "maxVizHeight": 300,
            "minSizeWidth": 0,
            "minVizHeight": 16,
            "minVizWidth": 8,
            "namePlacement": "auto",
            "orientation": "horizontal",
            "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
            "showUnfilled": True,
            "sizing": "auto",
            "valueMode": "color",
        },
        "targets": tgts,
    }


def table(title, tgts, unit="short", description="", decimals=None, rename=None,
          sort_by=None, hide=("Time",), footer=True):
    defaults = {
        "color": {"mode": "thresholds"},
        "custom": {"align": "auto", "cellOptions": {"type": "auto"}, "inspect": False},
        "mappings": [],
        "thresholds": thresholds(*GREEN),
        "unit": unit,
    }
    if decimals is not None:
        defaults["decimals"] = decimals
    transformations = [{"id": "merge", "options": {}}]
    transformations.append(
        {
            "id": "organize",
            "options": {
                "excludeByName": {h: True for h in hide},
                "indexByName": {},
                "renameByName": rename or {},
            },
        }
    )
    p = {
        "type": "table",
        "title": title,
        "description": description,
        "datasource": DS,
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {
            "cellHeight": "sm",
            "footer": {"countRows": False, "fields": "", "reducer": ["sum"], "show": footer},
            "showHeader": True,
            "sortBy": [{"desc": True, "displayName": sort_by}] if sort_by else [],
        },
        "targets": tgts,
        "transformations": transformations,
    }
    return p


def quantiles(metric_bucket, selector="", by="", qs=(0.5, 0.95, 0.99), legend_prefix=""):
    """histogram_quantile targets for each q, aggregated `by (le[, by])`."""
    group = f"le, {by}" if by else "le"
    out = []
    for i, q in enumerate(qs):
        label = f"p{int(round(q * 100))}"
        legend = f"{legend_prefix}{label}" if not by else f"{{{{{by}}}}} {label}"
        out.append(
            target(
                f"histogram_quantile({q}, sum by ({group}) "
                f"(rate({metric_bucket}{selector}[$__rate_interval])))",
                legend,
                ref=chr(ord("A") + i),
            )
        )
    return out


# ------------------------------------------------------------------------- workflow overview


def workflow_overview():
    wf = '{workflow=~"$workflow"}'
    d = Dashboard(
        "orchestration-workflow-overview",
        "Orchestration / Workflow overview",
        "Workflow runs: how many start and finish, how many fail, how long they take, how many are in progress.",
        ["workflows"],
        variables=[variable("workflow", "Workflow", "orchestration_workflow_runs_started_total", "workflow")],
    )
    started = "orchestration_workflow_runs_started_total"
    finished = "orchestration_workflow_runs_finished_total"
    bucket = "orchestration_workflow_run_duration_seconds_bucket"

    d.row("Summary (selected time range)")
    d.add(stat("Runs started", [target(f"sum(increase({started}{wf}[$__range]))", "started", instant=True)],
               decimals=0, graph=False, description="Runs started in the selected time range."), 4, 4)
    d.add(stat("Runs finished", [target(f"sum(increase({finished}{wf}[$__range]))", "finished", instant=True)],
               decimals=0, graph=False, description="Runs that ended COMPLETED, FAILED or CANCELLED."), 4, 4)
    d.add(stat("Runs failed", [target(f'sum(increase({finished}{{workflow=~"$workflow",status="FAILED"}}[$__range]))', "failed", instant=True)],
               decimals=0, graph=False, steps=((None, "green"), (1, "red"))), 4, 4)
    d.add(stat(
        "Success ratio",
        [target(
            f'sum(increase({finished}{{workflow=~"$workflow",status="COMPLETED"}}[$__range])) / '
            f'sum(increase({finished}{{workflow=~"$workflow",status=~"COMPLETED|FAILED"}}[$__range]))',
            "success", instant=True)],
        unit="percentunit", decimals=1, graph=False,
        steps=((None, "red"), (0.8, "orange"), (0.95, "green")),
        description="COMPLETED / (COMPLETED + FAILED) runs in the selected range (cancelled runs left out)."), 4, 4)
    d.add(stat("Runs in progress", [target("max(orchestration_workflow_runs_in_progress)", "in progress")],
               decimals=0, steps=((None, "green"), (50, "orange"), (200, "red")),
               description="PENDING, RUNNING and WAITING_APPROVAL runs right now (all workflows; sampled by the API)."), 4, 4)
    d.add(stat("Run duration p95",
               [target(f"histogram_quantile(0.95, sum by (le) (rate({bucket}{wf}[$__range])))", "p95", instant=True)],
               unit="s", graph=False, steps=((None, "green"), (300, "orange"), (1800, "red"))), 4, 4)

    d.row("Throughput")
    d.add(timeseries(
        "Run starts by workflow and trigger",
        [target(f"sum by (workflow, trigger) (rate({started}{wf}[$__rate_interval])) * 60", "{{workflow}} ({{trigger}})")],
        axis_label="runs / min", description="Runs started per minute, by workflow and trigger (manual, event, ...)."), 12, 8)
    d.add(timeseries(
        "Run finishes by workflow and status",
        [target(f"sum by (workflow, status) (rate({finished}{wf}[$__rate_interval])) * 60", "{{workflow}} {{status}}")],
        axis_label="runs / min", stack=True, description="Runs finished per minute, by workflow and final status."), 12, 8)

    d.row("Success and failure")
    d.add(timeseries(
        "Success vs failure ratio",
        targets(
            (f'sum(rate({finished}{{workflow=~"$workflow",status="COMPLETED"}}[$__rate_interval])) / '
             f"sum(rate({finished}{wf}[$__rate_interval]))", "completed"),
            (f'sum(rate({finished}{{workflow=~"$workflow",status="FAILED"}}[$__rate_interval])) / '
             f"sum(rate({finished}{wf}[$__rate_interval]))", "failed"),
            (f'sum(rate({finished}{{workflow=~"$workflow",status="CANCELLED"}}[$__rate_interval])) / '
             f"sum(rate({finished}{wf}[$__rate_interval]))", "cancelled"),
        ),
        unit="percentunit", stack=True, min_=0, max_=1,
        description="Share of finished runs per final status."), 12, 8)
    d.add(timeseries(
        "Failure ratio by workflow",
        [target(f'(sum by (workflow) (rate({finished}{{workflow=~"$workflow",status="FAILED"}}[$__rate_interval])) '
                f"or 0 * sum by (workflow) (rate({finished}{wf}[$__rate_interval]))) / "
                f"sum by (workflow) (rate({finished}{wf}[$__rate_interval]))", "{{workflow}}")],
        unit="percentunit", min_=0, max_=1,
        description="FAILED / finished runs per workflow. The WorkflowFailureRateHigh alert fires above 20 % over 5 minutes."), 12, 8)

    d.row("Duration")
    d.add(timeseries("Run duration p50 / p95 / p99", quantiles(bucket, wf), unit="s",
                     description="End-to-end duration of finished runs (start to COMPLETED/FAILED/CANCELLED)."), 12, 8)
    d.add(timeseries("Run duration p95 by workflow", quantiles(bucket, wf, by="workflow", qs=(0.95,)), unit="s"), 12, 8)

    d.row("In progress")
    d.add(timeseries("Runs in progress", [target("max(orchestration_workflow_runs_in_progress)", "in progress")],
                     description="PENDING, RUNNING and WAITING_APPROVAL runs (all workflows)."), 12, 8)
    d.add(table(
        "Finished runs by workflow and status (selected range)",
        [target(f"sum by (workflow, status) (increase({finished}{wf}[$__range]))", "", instant=True, fmt="table")],
        decimals=0, rename={"Value": "runs"}, sort_by="runs"), 12, 8)
    return d


# ------------------------------------------------------------------------- agent performance


def agent_performance():
    ag = '{agent=~"$agent"}'
    execs = "orchestration_node_executions_total"
    bucket = "orchestration_agent_run_duration_seconds_bucket"
    d = Dashboard(
        "orchestration-agent-performance",
        "Orchestration / Agent performance",
        "Agent executions (node attempts): how long they take, how often they fail and are retried.",
        ["agents"],
        variables=[variable("agent", "Agent", execs, "agent")],
    )
    d.row("Summary (selected time range)")
    d.add(stat("Node executions", [target(f"sum(increase({execs}{ag}[$__range]))", "executions", instant=True)],
               decimals=0, graph=False), 6, 4)
    d.add(stat("Failed executions", [target(f'sum(increase({execs}{{agent=~"$agent",status="FAILED"}}[$__range]))', "failed", instant=True)],
               decimals=0, graph=False, steps=((None, "green"), (1, "red"))), 6, 4)
    d.add(stat("Retries", [target(f"sum(increase(orchestration_node_retries_total{ag}[$__range]))", "retries", instant=True)],
               decimals=0, graph=False, steps=((None, "green"), (1, "orange"))), 6, 4)
    d.add(stat("Execution time p95",
               [target(f"histogram_quantile(0.95, sum by (le) (rate({bucket}{ag}[$__range])))", "p95", instant=True)],
               unit="s", graph=False), 6, 4)

    d.row("Execution time")
    d.add(timeseries("Execution time p50 by agent", quantiles(bucket, ag, by="agent", qs=(0.5,)), unit="s",
                     description="Wall time of one attempt: agent start to its result (including timeouts)."), 12, 8)
    d.add(timeseries("Execution time p95 by agent", quantiles(bucket, ag, by="agent", qs=(0.95,)), unit="s"), 12, 8)
    d.add(timeseries(
        "Execution time p95 by agent and action",
        [target(f"histogram_quantile(0.95, sum by (le, agent, action) (rate({bucket}{ag}[$__rate_interval])))",
                "{{agent}} {{action}}")], unit="s"), 12, 8)
    d.add(timeseries(
        "Mean execution time by agent",
        [target(f"sum by (agent) (rate(orchestration_agent_run_duration_seconds_sum{ag}[$__rate_interval])) / "
                f"sum by (agent) (rate(orchestration_agent_run_duration_seconds_count{ag}[$__rate_interval]))",
                "{{agent}}")], unit="s"), 12, 8)

    d.row("Failures and retries")
    d.add(timeseries(
        "Executions by agent and status",
        [target(f"sum by (agent, status) (rate({execs}{ag}[$__rate_interval])) * 60", "{{agent}} {{status}}")],
        axis_label="executions / min", stack=True), 12, 8)
    d.add(timeseries(
        "Node failure rate by agent",
        [target(f'(sum by (agent) (rate({execs}{{agent=~"$agent",status="FAILED"}}[$__rate_interval])) '
                f"or 0 * sum by (agent) (rate({execs}{ag}[$__rate_interval]))) / "
                f"sum by (agent) (rate({execs}{ag}[$__rate_interval]))", "{{agent}}")],
        unit="percentunit", min_=0, max_=1, description="FAILED / all attempts of each agent (0 for agents without failures)."), 12, 8)
    d.add(timeseries(
        "Failed executions by agent",
        [target(f'sum by (agent) (rate({execs}{{agent=~"$agent",status="FAILED"}}[$__rate_interval])) * 60', "{{agent}}")],
        axis_label="failures / min"), 12, 8)
    d.add(timeseries(
        "Retries by agent",
        [target(f"sum by (agent) (rate(orchestration_node_retries_total{ag}[$__rate_interval])) * 60", "{{agent}}")],
        axis_label="retries / min", description="Attempts that failed and were scheduled again by the node's retry policy."), 12, 8)
    d.add(table(
        "Agents (selected range)",
        targets(
            (f"sum by (agent) (increase({execs}{ag}[$__range]))", ""),
            (f'sum by (agent) (increase({execs}{{agent=~"$agent",status="FAILED"}}[$__range]))', ""),
            (f"sum by (agent) (increase(orchestration_node_retries_total{ag}[$__range]))", ""),
            (f"histogram_quantile(0.95, sum by (le, agent) (rate({bucket}{ag}[$__range])))", ""),
            instant=True, fmt="table"),
        decimals=2,
        rename={"Value #A": "executions", "Value #B": "failed", "Value #C": "retries", "Value #D": "p95 seconds"},
        sort_by="executions"), 24, 8)
    return d


# ----------------------------------------------------------------------------- system health


def system_health():
    http_b = "http_server_request_duration_seconds_bucket"
    http_c = "http_server_request_duration_seconds_count"
    d = Dashboard(
        "orchestration-system-health",
        "Orchestration / System health",
        "API traffic and errors, the job queue, workers and processes, rescuer repairs, approvals, events and alerts.",
        ["health"],
        time_from="now-3h",
    )
    d.row("Overview")
    d.add(stat("Workers up", [target('sum(up{job="worker"})', "up")], decimals=0,
               steps=((None, "red"), (1, "green")), description="Worker replicas Prometheus scrapes successfully."), 4, 4)
    d.add(stat("Workers down", [target('count(up{job="worker"} == 0) or vector(0)', "down")], decimals=0,
               steps=((None, "green"), (1, "red"))), 4, 4)
    d.add(stat("API up", [target('max(up{job="api"})', "api")], decimals=0,
               steps=((None, "red"), (1, "green"))), 4, 4)
    d.add(stat("API 5xx share (5m)",
               [target(f'sum(rate({http_c}{{status=~"5.."}}[5m])) / sum(rate({http_c}[5m]))', "5xx")],
               unit="percentunit", decimals=2, steps=((None, "green"), (0.01, "orange"), (0.05, "red"))), 4, 4)
    d.add(stat("Pending jobs", [target('max(orchestration_queue_depth{state="pending"})', "pending")], decimals=0,
               steps=((None, "green"), (50, "orange"), (100, "red"))), 4, 4)
    d.add(stat("Approvals pending", [target("max(orchestration_approvals_pending)", "pending")], decimals=0,
               steps=((None, "green"), (1, "blue")), description="Approval requests waiting for a decision."), 4, 4)

    d.row("API")
    d.add(timeseries("Request rate by route",
                     [target(f"sum by (method, route) (rate({http_c}[$__rate_interval]))", "{{method}} {{route}}")],
                     unit="reqps"), 12, 8)
    d.add(timeseries("Request latency p95 by route",
                     [target(f"histogram_quantile(0.95, sum by (le, method, route) (rate({http_b}[$__rate_interval])))",
                             "{{method}} {{route}}")], unit="s"), 12, 8)
    d.add(timeseries("Request latency p50 / p95 / p99 (all routes)", quantiles(http_b), unit="s"), 8, 8)
    d.add(timeseries("5xx responses by route and status",
                     [target(f'sum by (method, route, status) (rate({http_c}{{status=~"5.."}}[$__rate_interval]))',
                             "{{method}} {{route}} {{status}}")], unit="reqps"), 8, 8)
    d.add(timeseries("Responses by status",
                     [target(f"sum by (status) (rate({http_c}[$__rate_interval]))", "{{status}}")],
                     unit="reqps", stack=True), 8, 8)

    d.row("Queue")
    d.add(timeseries("Queue depth by state", [target("max by (state) (orchestration_queue_depth)", "{{state}}")],
                     description="Node jobs: pending (ready, unclaimed), scheduled (delayed retries), running (claimed)."), 12, 8)
    d.add(timeseries("Queue wait p50 / p95",
                     quantiles("orchestration_queue_wait_seconds_bucket", qs=(0.5, 0.95)), unit="s",
                     description="Time from a node job becoming ready to a worker claiming it. QueueWaitHigh fires above 30 s (p95)."), 12, 8)

    d.row("Workers and processes")
    d.add(timeseries("Scrape targets up", [target('up{job=~"api|worker"}', "{{job}} {{instance}}")],
                     min_=0, max_=1, decimals=0), 8, 8)
    d.add(timeseries("Resident memory",
                     [target('process_resident_memory_bytes{job=~"api|worker"}', "{{job}} {{instance}}")],
                     unit="bytes"), 8, 8)
    d.add(timeseries("CPU usage",
                     [target('rate(process_cpu_seconds_total{job=~"api|worker"}[$__rate_interval])', "{{job}} {{instance}}")],
                     unit="percentunit", description="CPU seconds per second (1 = 100 % of one core)."), 8, 8)
    d.add(timeseries("Rescuer repairs by kind",
                     [target("sum by (kind) (increase(orchestration_rescuer_repairs_total[$__rate_interval]))", "{{kind}}")],
                     bars=True, decimals=0,
                     description="State repaired after crashed or lost workers: expired leases, unfinalized or stalled runs, expired approvals."), 12, 8)
    d.add(table("Build info",
                [target("max by (job, instance, version) (orchestration_build_info)", "", instant=True, fmt="table")],
                hide=("Time", "Value"), footer=False), 12, 8)

    d.row("Approvals, events and alerts")
    d.add(timeseries("Approvals pending", [target("max(orchestration_approvals_pending)", "pending")], decimals=0), 8, 8)
    d.add(timeseries("Approval wait p95 by decision",
                     quantiles("orchestration_approval_wait_seconds_bucket", by="status", qs=(0.95,)), unit="s"), 8, 8)
    d.add(timeseries("Events received by source and status",
                     [target("sum by (source, status) (rate(orchestration_events_received_total[$__rate_interval])) * 60",
                             "{{source}} {{status}}")], axis_label="events / min"), 8, 8)
    d.add(timeseries("Alerts received by alert and status",
                     [target("sum by (alertname, status) (increase(orchestration_alerts_received_total[$__rate_interval]))",
                             "{{alertname}} {{status}}")], bars=True, decimals=0,
                     description="Alerts delivered to POST /api/webhooks/alertmanager."), 24, 8)
    return d


# ----------------------------------------------------------------------------- cost tracking


def cost_tracking():
    sel = '{project=~"$project", workflow=~"$workflow", agent=~"$agent"}'
    secs = "orchestration_execution_seconds_total"
    cost = "orchestration_cost_total"
    d = Dashboard(
        "orchestration-cost-tracking",
        "Orchestration / Cost tracking",
        "Agent execution minutes and cost (agents' costPerMinute x minutes), by project, workflow and agent.",
        ["cost"],
        time_from="now-7d",
        variables=[
            variable("project", "Project", secs, "project"),
            variable("workflow", "Workflow", secs, "workflow"),
            variable("agent", "Agent", secs, "agent"),
        ],
    )
    d.row("Selected time range")
    d.add(stat("Execution minutes", [target(f"sum(increase({secs}{sel}[$__range])) / 60", "minutes", instant=True)],
               decimals=1, graph=False), 6, 4)
    d.add(stat("Cost", [target(f"sum(increase({cost}{sel}[$__range]))", "cost", instant=True)],
               decimals=2, graph=False, description="In the unit of the agents' costPerMinute."), 6, 4)
    d.add(stat("Execution minutes, last 24 h", [target(f"sum(increase({secs}{sel}[1d])) / 60", "minutes", instant=True)],
               decimals=1, graph=False), 6, 4)
    d.add(stat("Cost, last 24 h", [target(f"sum(increase({cost}{sel}[1d]))", "cost", instant=True)],
               decimals=2, graph=False), 6, 4)

    d.row("Execution minutes")
    for dim in ("project", "workflow", "agent"):
        d.add(bargauge(f"Execution minutes by {dim}",
                       [target(f"sum by ({dim}) (increase({secs}{sel}[$__range])) / 60", f"{{{{{dim}}}}}", instant=True)],
                       decimals=1), 8, 8)
    d.add(timeseries("Busy agents by workflow (execution seconds per second)",
                     [target(f"sum by (workflow) (rate({secs}{sel}[$__rate_interval]))", "{{workflow}}")],
                     stack=True, description="Average number of agents running at once for each workflow."), 24, 8)

    d.row("Cost")
    for dim in ("project", "workflow", "agent"):
        d.add(bargauge(f"Cost by {dim}",
                       [target(f"sum by ({dim}) (increase({cost}{sel}[$__range]))", f"{{{{{dim}}}}}", instant=True)],
                       decimals=2), 8, 8)

    d.row("Daily trend")
    d.add(timeseries("Execution minutes per day by project",
                     [target(f"sum by (project) (increase({secs}{sel}[1d])) / 60", "{{project}}", interval="1d")],
                     bars=True, stack=True, decimals=1, interval="1d", axis_label="minutes / day"), 12, 8)
    d.add(timeseries("Cost per day by project",
                     [target(f"sum by (project) (increase({cost}{sel}[1d]))", "{{project}}", interval="1d")],
                     bars=True, stack=True, decimals=2, interval="1d", axis_label="cost / day"), 12, 8)
    d.add(timeseries("Cost per day by workflow",
                     [target(f"sum by (workflow) (increase({cost}{sel}[1d]))", "{{workflow}}", interval="1d")],
                     bars=True, stack=True, decimals=2, interval="1d"), 12, 8)
    d.add(timeseries("Cost per day by agent",
                     [target(f"sum by (agent) (increase({cost}{sel}[1d]))", "{{agent}}", interval="1d")],
                     bars=True, stack=True, decimals=2, interval="1d"), 12, 8)

    d.row("Breakdown")
    d.add(table(
        "Minutes and cost by project, workflow and agent (selected range)",
        targets(
            (f"sum by (project, workflow, agent) (increase({secs}{sel}[$__range])) / 60", ""),
            (f"sum by (project, workflow, agent) (increase({cost}{sel}[$__range]))", ""),
            instant=True, fmt="table"),
        decimals=2, rename={"Value #A": "minutes", "Value #B": "cost"}, sort_by="cost"), 24, 10)
    return d


DASHBOARDS = {
    "workflow-overview.json": workflow_overview,
    "agent-performance.json": agent_performance,
    "system-health.json": system_health,
    "cost-tracking.json": cost_tracking,
}


def render(build):
    return json.dumps(build().to_json(), indent=2, sort_keys=False) + "\n"


def main(argv):
    check = "--check" in argv
    stale = []
    os.makedirs(OUT, exist_ok=True)
    for name, build in DASHBOARDS.items():
        path = os.path.join(OUT, name)
        text = render(build)
        if check:
            try:
                with open(path, encoding="utf-8") as f:
                    if f.read() != text:
                        stale.append(name)
            except FileNotFoundError:
                stale.append(name)
        else:
            with open(path, "w", encoding="utf-8") as f:
                f.write(text)
            print(f"wrote {os.path.relpath(path)}")
    if stale:
        print("out of date (run deploy/grafana/generate-dashboards.py): " + ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
