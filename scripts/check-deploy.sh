#!/usr/bin/env bash
# Validates the deployment files without running any container:
#   Dockerfile, docker-compose.yml, deploy/prometheus (config, alert rules and their unit tests),
#   deploy/alertmanager, deploy/grafana (provisioning and dashboards), deploy/otel-collector,
#   deploy/tempo, deploy/loki, deploy/metric-names.txt.
#
#   scripts/check-deploy.sh                 # install missing tools, run every check
#   scripts/check-deploy.sh --list-metrics  # print every metric name the dashboards and alert
#                                           # rules use (except `up`), sorted, one per line;
#                                           # deploy/metric-names.txt is this output
#
# Tools come from Debian's packages: docker-compose (v1, for `docker-compose config`),
# prometheus (promtool), prometheus-alertmanager (amtool). Missing ones are installed
# (scripts/install-test-deps.sh does the Prometheus part); no service is started.
# Prints one PASS/FAIL line per check and exits 1 if any check failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
POLICY_RC=/usr/sbin/policy-rc.d

# ---------------------------------------------------------------------------------- python
# The snippets below need PyYAML; Debian's python3-yaml comes with docker-compose.
pick_python() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import yaml' >/dev/null 2>&1; then
      command -v "$py"
      return 0
    fi
  done
  return 1
}

# The metric names used by the dashboards' panel and variable queries and by the alert rules.
# Histogram series keep their suffix (_bucket, _sum, _count): these are the names of the
# samples in a /metrics page. `up` (Prometheus's own) is left out.
LIST_METRICS_PY=$(cat <<'PY'
import glob, json, re, sys
import yaml

KEYWORDS = {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left",
            "group_right", "bool", "offset", "inf", "nan", "atan2"}

def metric_names(expr):
    names = set(re.findall(r"label_values\(\s*([a-zA-Z_:][\w:]*)\s*[,{)]", expr))
    expr = re.sub(r"label_values\([^)]*\)", " ", expr)
    expr = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)   # strings
    expr = re.sub(r"\[[^\]]*\]", " ", expr)                                    # ranges
    expr = re.sub(r"\{[^}]*\}", " ", expr)                                     # matchers
    expr = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", expr)
    for m in re.finditer(r"(?<![\w:.$])([a-zA-Z_:][\w:]*)(\s*\()?", expr):
        name, call = m.group(1), m.group(2)
        if call or name.lower() in KEYWORDS:
            continue
        names.add(name)
    return names

def dashboard_exprs(path):
    with open(path, encoding="utf-8") as f:
        d = json.load(f)
    out = []
    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))
    for p in panels(d.get("panels", [])):
        for t in p.get("targets", []):
            if t.get("expr"):
                out.append(t["expr"])
    for v in d.get("templating", {}).get("list", []):
        q = v.get("query")
        if isinstance(q, dict):
            q = q.get("query")
        if v.get("type") == "query" and isinstance(q, str) and q:
            out.append(q)
    return out

def rule_exprs(path):
    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    return [r["expr"] for g in doc.get("groups", []) for r in g.get("rules", [])]

names = set()
for path in sorted(glob.glob("deploy/grafana/dashboards/*.json")):
    for e in dashboard_exprs(path):
        names |= metric_names(e)
for path in sorted(glob.glob("deploy/prometheus/rules/*.rules.yml")):
    for e in rule_exprs(path):
        names |= metric_names(str(e))
names.discard("up")
if "--self-test" in sys.argv:
    got = metric_names('histogram_quantile(0.95, sum by (le, route) (rate(a_bucket{status=~"5..",x="$y"}[$__rate_interval]))) / on() group_left sum(b_total offset 1d) > bool 1e3 and vector(0) or label_values(c_total, workflow)')
    assert got == {"a_bucket", "b_total", "c_total"}, got
print("\n".join(sorted(names)))
PY
)

if [ "${1:-}" = "--list-metrics" ]; then
  PY=$(pick_python) || { echo "check-deploy: need python3 with PyYAML (apt-get install python3-yaml)" >&2; exit 1; }
  exec "$PY" -c "$LIST_METRICS_PY"
fi
if [ $# -gt 0 ]; then
  echo "usage: $0 [--list-metrics]" >&2
  exit 2
fi

# ------------------------------------------------------------------------------- installing
policy_installed=0
remove_policy() {
  if [ "$policy_installed" -eq 1 ]; then rm -f "$POLICY_RC"; policy_installed=0; fi
}
trap remove_policy EXIT

apt_install() {   # apt_install PACKAGE...: only called for a missing package; no service starts
  if [ "$(id -u)" -ne 0 ]; then
    echo "check-deploy: need root to install: $*" >&2
    return 1
  fi
  if [ ! -e "$POLICY_RC" ]; then
    printf '#!/bin/sh\n# temporary, from scripts/check-deploy.sh\nexit 101\n' >"$POLICY_RC"
    chmod 0755 "$POLICY_RC"
    policy_installed=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "$@"
  remove_policy
}

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus-alertmanager >/dev/null 2>&1; then
  if [ -f scripts/install-test-deps.sh ]; then
    bash scripts/install-test-deps.sh >&2
  else
    apt_install prometheus prometheus-alertmanager >&2
  fi
fi
if ! command -v docker-compose >/dev/null 2>&1; then
  apt_install docker-compose >&2
fi
if ! PY=$(pick_python); then
  apt_install python3-yaml >&2
  PY=$(pick_python)
fi

find_amtool() {
  if command -v amtool >/dev/null 2>&1; then command -v amtool; return 0; fi
  local p
  p=$(dpkg -L prometheus-alertmanager 2>/dev/null | grep -m1 '/amtool$' || true)
  if [ -n "$p" ] && [ -x "$p" ]; then echo "$p"; return 0; fi
  return 1
}
AMTOOL=$(find_amtool || echo amtool)

# ------------------------------------------------------------------------------------ checks
FAILED=0
LOG=$(mktemp)
TMP=$(mktemp -d)
cleanup() { remove_policy; rm -rf "$LOG" "$TMP"; }
trap cleanup EXIT

check() {   # check NAME COMMAND...: one PASS/FAIL line; the output of a failure follows it
  local name=$1
  shift
  if "$@" >"$LOG" 2>&1; then
    printf 'PASS  %s\n' "$name"
  else
    printf 'FAIL  %s\n' "$name"
    sed 's/^/      /' "$LOG"
    FAILED=1
  fi
}

pyrun() { "$PY" -c "$1" "${@:2}"; }

check "docker-compose config (docker-compose.yml)" \
  docker-compose -f docker-compose.yml config -q

compose_shape() {
  pyrun '
import yaml, sys
c = yaml.safe_load(open("docker-compose.yml"))
s = c["services"]
need = ["postgres", "nats", "api", "worker", "prometheus", "alertmanager", "grafana",
        "otel-collector", "tempo", "loki", "promtail"]
missing = [n for n in need if n not in s]
assert not missing, f"services missing: {missing}"
w = s["worker"]
assert "container_name" not in w and "ports" not in w, "worker must scale: no container_name, no host ports"
for svc in ("api", "worker"):
    env = s[svc]["environment"]
    for k in ("DATABASE_URL", "NATS_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_SERVICE_NAME"):
        assert k in env, f"{svc}: {k} missing"
assert "ORCH_ALERTMANAGER_TOKEN" in s["api"]["environment"], "api: ORCH_ALERTMANAGER_TOKEN missing"
assert "-js" in s["nats"]["command"], "nats without -js"
print("ok")
'
}
check "docker-compose services: scalable worker, env wiring" compose_shape

dockerfile_bins() {
  local bin
  for bin in orchestration-api orchestration-worker; do
    grep -q "name = \"$bin\"" */Cargo.toml || { echo "no [[bin]] $bin in */Cargo.toml"; return 1; }
    grep -q "target/release/$bin" Dockerfile || { echo "Dockerfile does not copy $bin"; return 1; }
  done
  grep -q '^FROM rust:1.95-bookworm' Dockerfile && grep -q '^FROM debian:bookworm-slim' Dockerfile \
    && grep -q 'cargo build --release --locked' Dockerfile \
    && grep -q 'ORCH_AGENTS_DIR=/app/agents' Dockerfile && grep -q '^USER ' Dockerfile
  grep -qx 'target/' .dockerignore && grep -qx '.git' .dockerignore
  if command -v cargo >/dev/null 2>&1; then
    # --locked: the lock file must not need changes, as in the image build.
    cargo metadata --locked --offline --format-version 1 --no-deps >/dev/null
  fi
}
check "Dockerfile: binaries, stages, lock file up to date" dockerfile_bins

check "promtool check config deploy/prometheus/prometheus.yml" \
  promtool check config deploy/prometheus/prometheus.yml
check "promtool check rules deploy/prometheus/rules/*.rules.yml" \
  promtool check rules deploy/prometheus/rules/*.rules.yml
check "promtool test rules deploy/prometheus/rules/*.test.yml" \
  promtool test rules deploy/prometheus/rules/*.test.yml

rules_complete() {
  pyrun '
import glob, yaml
alerts, tested = {}, set()
for p in glob.glob("deploy/prometheus/rules/*.rules.yml"):
    for g in yaml.safe_load(open(p))["groups"]:
        for r in g["rules"]:
            if "alert" in r:
                alerts[r["alert"]] = r
for p in glob.glob("deploy/prometheus/rules/*.test.yml"):
    for t in yaml.safe_load(open(p))["tests"]:
        for a in t.get("alert_rule_test", []):
            if a.get("exp_alerts"):
                tested.add(a["alertname"])
need = {"WorkflowFailureRateHigh", "WorkflowRunStuck", "QueueBacklogHigh", "QueueWaitHigh",
        "ApiErrorRateHigh", "WorkerDown", "RescuerRepairing"}
assert need <= set(alerts), f"alerts missing: {sorted(need - set(alerts))}"
for name, r in alerts.items():
    assert r.get("labels", {}).get("severity"), f"{name}: no severity label"
    for a in ("summary", "description"):
        assert r.get("annotations", {}).get(a), f"{name}: no {a} annotation"
untested = sorted(set(alerts) - tested)
assert not untested, f"alerts without a firing unit test: {untested}"
print(f"{len(alerts)} alerts, all with severity, summary, description and a firing test")
'
}
check "alert rules: severity, annotations, a firing test for every alert" rules_complete

check "amtool check-config deploy/alertmanager/alertmanager.yml" \
  "$AMTOOL" check-config deploy/alertmanager/alertmanager.yml

alertmanager_route() {
  pyrun '
import yaml
c = yaml.safe_load(open("deploy/alertmanager/alertmanager.yml"))
r = {x["name"]: x for x in c["receivers"]}[c["route"]["receiver"]]
w = r["webhook_configs"][0]
assert w["url"] == "http://api:9002/api/webhooks/alertmanager", w["url"]
assert w["send_resolved"] is True
assert w["http_config"]["authorization"]["credentials"], "no bearer credentials"
print("ok")
'
}
check "alertmanager routes to the orchestrator webhook with a bearer token" alertmanager_route

for f in deploy/grafana/dashboards/*.json; do
  check "python3 -m json.tool $f" "$PY" -m json.tool "$f"
done
check "dashboards match deploy/grafana/generate-dashboards.py" \
  "$PY" deploy/grafana/generate-dashboards.py --check

dashboards_shape() {
  pyrun '
import glob, json, yaml
ds = yaml.safe_load(open("deploy/grafana/provisioning/datasources/datasources.yml"))["datasources"]
uids = {d["uid"]: d for d in ds}
assert {"prometheus", "tempo", "loki"} <= set(uids), sorted(uids)
loki, tempo = uids["loki"]["jsonData"], uids["tempo"]["jsonData"]
df = loki["derivedFields"][0]
q = chr(34)
assert df["datasourceUid"] == "tempo" and df["matcherRegex"] == q + "trace_id" + q + ":" + q + "(\\w+)" + q, df
assert tempo["tracesToLogsV2"]["datasourceUid"] == "loki"
want = {"workflow-overview", "agent-performance", "system-health", "cost-tracking"}
seen = set()
for p in sorted(glob.glob("deploy/grafana/dashboards/*.json")):
    d = json.load(open(p))
    name = p.rsplit("/", 1)[1][:-5]
    seen.add(name)
    assert d.get("uid") and d.get("title") and d.get("schemaVersion", 0) >= 36, p
    n = 0
    for panel in d["panels"]:
        if panel["type"] == "row":
            continue
        assert panel.get("datasource", {}).get("uid") == "prometheus", (p, panel["title"])
        for t in panel["targets"]:
            assert t["datasource"]["uid"] in uids, (p, panel["title"])
            assert t["expr"].strip(), (p, panel["title"])
            n += 1
    assert n > 0, p
assert want <= seen, sorted(want - seen)
print("ok")
'
}
check "dashboards: uids, Prometheus datasource, trace<->log links provisioned" dashboards_shape

# Each dashboard query, with Grafana's variables replaced, as a recording rule: promtool parses it.
dashboards_promql() {
  # shellcheck disable=SC2016  # the $ are Grafana variables, for Python to replace
  pyrun '
import glob, json, re, sys, yaml
rules = []
for p in sorted(glob.glob("deploy/grafana/dashboards/*.json")):
    d = json.load(open(p))
    for panel in d["panels"]:
        for t in panel.get("targets", []):
            e = t["expr"]
            e = e.replace("$__rate_interval", "1m").replace("$__interval", "1m").replace("$__range", "1h")
            e = re.sub(r"\$\{?\w+\}?", ".*", e)
            rules.append({"record": f"dashboard_query_{len(rules)}", "expr": e})
yaml.safe_dump({"groups": [{"name": "dashboards", "rules": rules}]}, open(sys.argv[1], "w"))
print(len(rules), "queries")
' "$TMP/dashboards.rules.yml" && promtool check rules "$TMP/dashboards.rules.yml"
}
check "dashboard queries parse as PromQL (promtool)" dashboards_promql

metric_names_known() {
  "$PY" -c "$LIST_METRICS_PY" --self-test >"$TMP/metrics.txt"
  diff -u deploy/metric-names.txt "$TMP/metrics.txt" || {
    echo "deploy/metric-names.txt is out of date: scripts/check-deploy.sh --list-metrics > deploy/metric-names.txt"
    return 1
  }
  pyrun '
import sys
known = """http_server_request_duration_seconds orchestration_workflow_runs_started_total
orchestration_workflow_runs_finished_total orchestration_workflow_run_duration_seconds
orchestration_workflow_runs_in_progress orchestration_node_executions_total
orchestration_agent_run_duration_seconds orchestration_node_retries_total
orchestration_queue_wait_seconds orchestration_queue_depth orchestration_approvals_pending
orchestration_approval_wait_seconds orchestration_events_received_total
orchestration_alerts_received_total orchestration_rescuer_repairs_total
orchestration_execution_seconds_total orchestration_cost_total process_cpu_seconds_total
process_resident_memory_bytes orchestration_build_info""".split()
histograms = {"http_server_request_duration_seconds", "orchestration_workflow_run_duration_seconds",
              "orchestration_agent_run_duration_seconds", "orchestration_queue_wait_seconds",
              "orchestration_approval_wait_seconds"}
allowed = set(known) - histograms
for h in histograms:
    allowed |= {h + "_bucket", h + "_sum", h + "_count"}
used = [l.strip() for l in open(sys.argv[1]) if l.strip()]
unknown = sorted(set(used) - allowed)
assert not unknown, f"not exported by the service: {unknown}"
print(len(used), "metric names, all exported by the service")
' "$TMP/metrics.txt"
}
check "deploy/metric-names.txt up to date, every name exported by the service" metric_names_known

yaml_parses() {
  pyrun '
import sys, yaml
for p in sys.argv[1:]:
    doc = yaml.safe_load(open(p))
    assert isinstance(doc, dict) and doc, p
otel = yaml.safe_load(open("deploy/otel-collector/config.yaml"))
pipes = otel["service"]["pipelines"]
for name, pipe in pipes.items():
    for kind in ("receivers", "processors", "exporters"):
        for c in pipe.get(kind, []):
            assert c in otel[kind], f"otel-collector: pipeline {name} uses undefined {kind[:-1]} {c}"
assert "otlp/tempo" in pipes["traces"]["exporters"] and pipes["logs"]["exporters"]
print("ok")
' deploy/otel-collector/config.yaml deploy/tempo/tempo.yaml deploy/loki/loki.yaml \
    deploy/loki/promtail.yaml deploy/grafana/provisioning/datasources/datasources.yml \
    deploy/grafana/provisioning/dashboards/orchestration.yml
}
check "otel-collector, tempo, loki, promtail, grafana provisioning YAML" yaml_parses

if [ "$FAILED" -ne 0 ]; then
  echo "check-deploy: FAILED"
  exit 1
fi
echo "check-deploy: all checks passed"
