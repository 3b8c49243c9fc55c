#!/usr/bin/env bash
# The monitoring check: deploy/monitoring/alerts.yaml is valid and its unit
# tests pass (promtool, from Debian's prometheus package), every alert is
# fired by a test and has a runbook section its runbook_url points at, every
# PromQL expression of the Grafana dashboard parses, every metric the rules
# and the dashboard read is one erp-connect exports, and the example
# Prometheus configuration loads.
#
#   bash .ci/alerts-check.sh        (from anywhere; exit 0 when all hold)
#
# Runbook sections are looked for in deploy/README.md, under "## Alerts and
# runbooks"; RUNBOOK=FILE overrides.
set -euo pipefail
cd "$(dirname "$0")/.."

monitoring=deploy/monitoring
rules="$monitoring/alerts.yaml"
tests="$monitoring/alerts.test.yaml"
dashboard="$monitoring/dashboard.json"
config="$monitoring/prometheus.yaml"
RUNBOOK="${RUNBOOK:-deploy/README.md}"

work=$(mktemp -d)
made_policy=""
cleanup() {
  rm -rf "$work"
  if [ -n "$made_policy" ]; then rm -f /usr/sbin/policy-rc.d; fi
}
trap cleanup EXIT

# promtool comes with Debian's prometheus package. Its maintainer script
# would start a Prometheus server where it can: a policy-rc.d that says no
# keeps that from happening (containers usually have one already), and
# leaving out the recommended node exporter avoids a second daemon. Should
# a server start all the same, the one it started is stopped by its pid.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
python3 -c 'import yaml' 2>/dev/null || missing+=(python3-yaml)
if [ "${#missing[@]}" -gt 0 ]; then
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    made_policy=1
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
  fi
  before=$(pgrep -x prometheus || true)
  if ! { apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$work/apt" 2>&1; then
    cat "$work/apt"
    echo "alerts-check: FAILED: apt-get install ${missing[*]}" >&2
    exit 1
  fi
  for pid in $(pgrep -x prometheus || true); do
    if ! grep -qx "$pid" <<<"$before"; then
      echo "alerts-check: the prometheus package started a server (pid $pid); stopping it" >&2
      kill "$pid" 2>/dev/null || true
    fi
  done
  echo "installed: ${missing[*]} ($(promtool --version 2>&1 | head -1))"
fi

# promtool's own verdicts, shown whole when they fail.
run() {
  local log="$work/log"
  if ! "$@" >"$log" 2>&1; then
    cat "$log"
    echo "alerts-check: FAILED: $*" >&2
    exit 1
  fi
}
run promtool check rules "$rules"
echo "rules: $(grep -o '[0-9]* rules found' "$work/log") in $rules (promtool check rules)"
run promtool test rules "$tests"
echo "unit tests: $(grep -c '^  - name:' "$tests") tests in $tests pass (promtool test rules)"

# Everything else in one pass over the files; it writes the dashboard's
# expressions as a rule file, and the example configuration with what
# Debian's promtool can read (below), for promtool to parse next.
python3 - "$rules" "$tests" "$dashboard" "$RUNBOOK" "$config" "$work" <<'PY'
import json, os, re, sys, glob
import yaml

rules_path, tests_path, dashboard_path, runbook_path, config_path, work = sys.argv[1:]
failures = []
def fail(msg):
    failures.append(msg)

# --- the rules ------------------------------------------------------------
with open(rules_path) as f:
    rule_file = yaml.safe_load(f)
alert_rules = [r for g in rule_file["groups"] for r in g["rules"] if "alert" in r]
record_rules = [r for g in rule_file["groups"] for r in g["rules"] if "record" in r]
alerts = sorted({r["alert"] for r in alert_rules})
pairs = {(r["alert"], r.get("labels", {}).get("severity")) for r in alert_rules}
for r in alert_rules:
    sev = r.get("labels", {}).get("severity")
    if sev not in ("page", "ticket"):
        fail(f"{r['alert']}: severity {sev!r}, not page or ticket")
    ann = r.get("annotations", {})
    for key in ("summary", "description", "runbook_url"):
        if not ann.get(key):
            fail(f"{r['alert']} ({sev}): no {key} annotation")

# --- every alert fired by a test -------------------------------------------
with open(tests_path) as f:
    test_file = yaml.safe_load(f)
fired, cases, silent = set(), 0, 0
for test in test_file["tests"]:
    for case in test.get("alert_rule_test", []):
        cases += 1
        exp = case.get("exp_alerts") or []
        if not exp:
            silent += 1
        for a in exp:
            fired.add((case["alertname"], a.get("exp_labels", {}).get("severity")))
not_fired = sorted(pairs - fired, key=str)
for name, sev in not_fired:
    fail(f"{name} ({sev}): no unit test fires it")
print(f"alerts: {len(alerts)} alerts in {len(alert_rules)} rules (+{len(record_rules)} recording), "
      f"{len(pairs & fired)} of {len(pairs)} alert/severity pairs fired by {len(test_file['tests'])} unit tests "
      f"({cases} cases, {silent} expecting silence)")

# --- a runbook section per alert, and runbook_url pointing at it -----------
with open(runbook_path) as f:
    headings = set(re.findall(r"^### (\S+)\s*$", f.read(), re.M))
for name in alerts:
    if name not in headings:
        fail(f"{name}: no '### {name}' section in {runbook_path}")
for r in alert_rules:
    want = f"deploy/README.md#{r['alert'].lower()}"
    if not r.get("annotations", {}).get("runbook_url", "").endswith(want):
        fail(f"{r['alert']}: runbook_url does not end with {want}")
stale = sorted(h for h in headings if h.startswith("ErpConnect") and h not in alerts)
for h in stale:
    fail(f"{runbook_path}: section '### {h}' names no alert")
print(f"runbook: {len(alerts)} alerts, {len(headings & set(alerts))} sections in {runbook_path}, "
      f"{len(alert_rules)} runbook_urls anchored")

# --- the dashboard ---------------------------------------------------------
with open(dashboard_path) as f:
    dash = json.load(f)
def walk(panels):
    for p in panels:
        yield p
        yield from walk(p.get("panels", []))
panels = [p for p in walk(dash["panels"]) if p.get("type") != "row"]
variables = {v["name"]: v for v in dash.get("templating", {}).get("list", [])}
if variables.get("datasource", {}).get("type") != "datasource" or variables["datasource"].get("query") != "prometheus":
    fail("dashboard: no ${datasource} variable of type prometheus")
exprs = []
for p in panels:
    if p.get("datasource", {}).get("uid") != "${datasource}":
        fail(f"dashboard panel {p.get('title')!r}: datasource is not ${{datasource}}")
    for t in p.get("targets", []):
        if t.get("datasource", {}).get("uid") != "${datasource}":
            fail(f"dashboard panel {p.get('title')!r} {t.get('refId')}: datasource is not ${{datasource}}")
        exprs.append((p["title"], t["expr"]))
# Grafana's variables, replaced by what they stand for, so promtool can parse.
def concrete(expr):
    expr = re.sub(r"\$\{?__(rate_interval|interval|range)\}?", "5m", expr)
    return re.sub(r"\$\{?\w+\}?", ".*", expr)
with open(os.path.join(work, "dashboard-exprs.yaml"), "w") as f:
    yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:expr:{i}", "expr": concrete(e)} for i, (_, e) in enumerate(exprs)]}]}, f)
with open(os.path.join(work, "dashboard-index"), "w") as f:
    f.writelines(f"dashboard:expr:{i}  {title}\n" for i, (title, _) in enumerate(exprs))
with open(os.path.join(work, "dashboard-count"), "w") as f:
    f.write(f"{len(panels)} {len(exprs)}\n")

# --- metric names: exported by erp-connect ---------------------------------
with open("README.md") as f:
    readme = f.read()
metrics_section = readme.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
documented = set()
for line in metrics_section.splitlines():
    if line.startswith("| `"):
        documented.update("erp_connect_" + n for n in re.findall(r"`([a-z_]+)`", line.split("|")[1]))
sources = ""
for path in glob.glob("**/src/**/*.rs", recursive=True):
    if "/target/" not in path:
        with open(path) as f:
            sources += f.read()
used = set()
name_re = re.compile(r"(?<![\w:])erp_connect_[a-z0-9_]+")
with open(rules_path) as f:
    used.update(name_re.findall(f.read()))
for _, e in exprs:
    used.update(name_re.findall(e))
families = {re.sub(r"_(bucket|count|sum)$", "", n) if re.sub(r"_(bucket|count|sum)$", "", n) in documented else n
            for n in used}
for n in sorted(families - documented):
    fail(f"metric {n}: not in README.md's Metrics table")
for n in sorted(families & documented):
    if f'"{n}"' not in sources:
        fail(f"metric {n}: no Rust source names it")
print(f"metrics: {len(families)} families read by the rules and the dashboard, "
      f"{len(families & documented)} in README.md's Metrics table and named in the sources")

# --- the example configuration, as far as Debian's promtool reads it -------
# Debian builds Prometheus without Kubernetes service discovery, so its
# promtool refuses `kubernetes_sd_configs`. Those blocks are checked here
# for their shape and replaced by a static target; promtool then checks the
# rest (relabelling, rule files, alerting).
with open(config_path) as f:
    config = yaml.safe_load(f)
sd_keys = {"role", "namespaces", "selectors", "api_server", "kubeconfig_file", "attach_metadata",
           "basic_auth", "authorization", "oauth2", "tls_config", "proxy_url", "follow_redirects", "enable_http2"}
roles = {"pod", "node", "service", "endpoints", "endpointslice", "ingress"}
sd_blocks = 0
for job in config.get("scrape_configs", []):
    for sd in job.pop("kubernetes_sd_configs", []) or []:
        sd_blocks += 1
        if not isinstance(sd, dict) or set(sd) - sd_keys or sd.get("role") not in roles:
            fail(f"{config_path}: job {job.get('job_name')}: kubernetes_sd_configs entry {sd!r} is not valid")
        job.setdefault("static_configs", []).append({"targets": ["127.0.0.1:9"]})
config["rule_files"] = [os.path.abspath(os.path.join(os.path.dirname(config_path), p))
                        for p in config.get("rule_files", [])]
with open(os.path.join(work, "prometheus.yaml"), "w") as f:
    yaml.safe_dump(config, f)
with open(os.path.join(work, "config-count"), "w") as f:
    f.write(f"{len(config.get('scrape_configs', []))} {sd_blocks}\n")

if failures:
    for m in failures:
        print(f"alerts-check: {m}", file=sys.stderr)
    sys.exit(1)
PY

if ! promtool check rules "$work/dashboard-exprs.yaml" >"$work/log" 2>&1; then
  cat "$work/log" "$work/dashboard-index"
  echo "alerts-check: FAILED: a PromQL expression of $dashboard does not parse (panels above)" >&2
  exit 1
fi
read -r panels exprs <"$work/dashboard-count"
echo "dashboard: $panels panels, $exprs PromQL expressions parse (promtool check rules)"

run promtool check config "$work/prometheus.yaml"
read -r jobs sd_blocks <"$work/config-count"
echo "prometheus.yaml: $jobs scrape job(s) and the rule file load (promtool check config; $sd_blocks kubernetes_sd_configs block(s) checked for shape only: Debian's promtool lacks Kubernetes discovery)"
