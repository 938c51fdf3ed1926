#!/usr/bin/env python3
"""Checks the monitoring files in deploy/ against promtool and against the metrics the server exports.

  python3 tests/deploy/monitoring_test.py --deploy deploy --metrics-source server/metrics/server_metrics.cc

- the alert rules: `promtool check rules`, their shape (for, severity, summary, description) and
  `promtool test rules` on brickserve-alerts.test.yml, which must make every alert fire;
- the scrape config: `promtool check config`, and the Kubernetes job's relabelling run by
  `promtool check service-discovery` on synthetic pods (Debian's promtool is built without
  kubernetes_sd, so that job is checked with a file_sd of the same pods' metadata);
- the Grafana dashboard: an importable dashboard (uid, title, panels, ${datasource} variable, every
  query on it), each query valid PromQL (promtool parses them as recording rules);
- every metric name in every alert and dashboard query exists in the server's metrics source
  (histograms through _bucket/_sum/_count), except the names in PLANNED.

Exit 0 when all pass, 1 when one fails, 77 (skipped) without promtool.
"""
import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

# Metrics the deploy files may name before the server exports them, with the work that adds them
# (name -> "the work"). None today: the brick metrics are exported since the brick registry landed.
PLANNED = {}
# Series Prometheus writes itself for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}
HISTOGRAM_SUFFIXES = ("_bucket", "_sum", "_count")
SEVERITIES = {"critical", "warning", "info"}
# Families the dashboard must chart (the panels the operations issue asks for).
DASHBOARD_MUST_USE = {
    "brickserve_grpc_requests_total", "brickserve_time_to_first_token_seconds_bucket",
    "brickserve_inter_token_latency_seconds_bucket", "brickserve_grpc_request_duration_seconds_bucket",
    "brickserve_generation_tokens_total", "brickserve_prompt_tokens_total",
    "brickserve_prefix_cache_hit_tokens_total", "brickserve_queued_requests", "brickserve_running_requests",
    "brickserve_preemptions_total", "brickserve_kv_cache_blocks_used", "brickserve_kv_cache_blocks_capacity",
    "brickserve_build_info",
    # The Bricks row.
    "brickserve_bricks", "brickserve_brick_resident_bytes", "brickserve_brick_memory_budget_bytes",
    "brickserve_brick_requests_total", "brickserve_brick_loads_total", "brickserve_brick_evictions_total",
    "brickserve_brick_reloads_total", "brickserve_brick_load_failures_total",
}
GRAFANA_BUILTINS = {"__rate_interval", "__interval", "__interval_ms", "__range", "__range_s", "__range_ms",
                    "__from", "__to", "__dashboard", "__org", "__user"}
# Grafana's variable syntax; "$1" in label_replace is a regex group, which Grafana leaves alone.
GRAFANA_VAR = re.compile(r"\$\{([A-Za-z_]\w*)(?:[:.][^}]*)?\}|\$([A-Za-z_]\w*)|\[\[([A-Za-z_]\w*)(?::\w+)?\]\]")

PROMQL_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless",
                   "bool", "offset", "inf", "nan"}


class Fail(Exception):
    pass


def metric_names(expr):
    """Metric names a PromQL expression selects (Grafana variables allowed in it)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`', '""', expr)  # string literals
    s = GRAFANA_VAR.sub(" ", s)
    s = re.sub(r"\{[^}]*\}", " ", s)  # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)  # ranges and subqueries
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)  # label lists
    names = set()
    for m in re.finditer(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?", s):
        if m.group(2) is None and m.group(1).lower() not in PROMQL_KEYWORDS:
            names.add(m.group(1))
    return names


def grafana_vars(expr):
    return {next(g for g in m.groups() if g) for m in GRAFANA_VAR.finditer(expr)}


def exported_metrics(source):
    """(family names, histogram family names) from the server's metrics source."""
    text = Path(source).read_text()
    families = set(re.findall(r'"([a-z_:][a-z0-9_:]*_[a-z0-9_:]+)"', text))
    histograms = set(re.findall(r'BuildHistogram\(\)\s*\.Name\("([^"]+)"\)', text))
    histograms |= set(re.findall(r'FromLatency\(\s*"([^"]+)"', text))
    if not families or not histograms:
        raise Fail(f"{source}: found no metric names or no histograms; has the metrics code moved?")
    return families, histograms


def run_promtool(promtool, *args, cwd=None, stdout_only=False):
    proc = subprocess.run([promtool, *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    out = proc.stdout if stdout_only and proc.returncode == 0 else proc.stdout + proc.stderr
    return proc.returncode, out.strip()


def promtool_ok(promtool, *args, cwd=None, stdout_only=False):
    rc, out = run_promtool(promtool, *args, cwd=cwd, stdout_only=stdout_only)
    if rc != 0:
        raise Fail(f"promtool {' '.join(args)} failed:\n{out}")
    return out


# --- alert rules -------------------------------------------------------------------------------

def alert_rules(deploy):
    doc = yaml.safe_load((deploy / "prometheus/brickserve-alerts.yml").read_text())
    return [r for g in doc["groups"] for r in g["rules"] if "alert" in r]


def check_rules_promtool(promtool, deploy):
    out = promtool_ok(promtool, "check", "rules", str(deploy / "prometheus/brickserve-alerts.yml"))
    return out.splitlines()[-1].strip()


def check_rules_shape(deploy):
    rules = alert_rules(deploy)
    names = [r["alert"] for r in rules]
    if len(names) != len(set(names)):
        raise Fail(f"duplicate alert names: {names}")
    for r in rules:
        problems = []
        if "for" not in r:
            problems.append("no for:")
        if r.get("labels", {}).get("severity") not in SEVERITIES:
            problems.append(f"severity label not one of {sorted(SEVERITIES)}")
        for key in ("summary", "description"):
            if not r.get("annotations", {}).get(key, "").strip():
                problems.append(f"no {key} annotation")
        if problems:
            raise Fail(f"alert {r['alert']}: " + "; ".join(problems))
    return f"{len(rules)} alerts, each with for, severity, summary and description: {', '.join(names)}"


def check_rules_unit_tests(promtool, deploy):
    test_file = deploy / "prometheus/brickserve-alerts.test.yml"
    promtool_ok(promtool, "test", "rules", test_file.name, cwd=test_file.parent)
    doc = yaml.safe_load(test_file.read_text())
    firing = {t["alertname"] for test in doc["tests"] for t in test.get("alert_rule_test", [])
              if t.get("exp_alerts")}
    untested = [r["alert"] for r in alert_rules(deploy) if r["alert"] not in firing]
    if untested:
        raise Fail(f"{test_file.name} never expects these alerts to fire: {untested}")
    return f"{len(doc['tests'])} tests pass; every alert is made to fire, and quiet series stay quiet"


# --- scrape config -----------------------------------------------------------------------------

# Pods as Kubernetes discovery describes them, and the target each must become (None: dropped).
SD_PODS = [
    ({"__address__": "10.1.0.5:50051", "__meta_kubernetes_pod_ip": "10.1.0.5",
      "__meta_kubernetes_pod_name": "brickserve-0", "__meta_kubernetes_namespace": "llm",
      "__meta_kubernetes_pod_node_name": "gpu-1", "__meta_kubernetes_pod_phase": "Running",
      "__meta_kubernetes_pod_label_app_kubernetes_io_name": "brickserve",
      "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
      "__meta_kubernetes_pod_annotation_prometheus_io_port": "9464"},
     {"instance": "10.1.0.5:9464", "__metrics_path__": "/metrics", "namespace": "llm", "pod": "brickserve-0",
      "node": "gpu-1", "job": "brickserve-pods"}),
    ({"__address__": "[fd00::7]:50051", "__meta_kubernetes_pod_ip": "fd00::7",
      "__meta_kubernetes_pod_name": "brickserve-1", "__meta_kubernetes_namespace": "llm",
      "__meta_kubernetes_pod_phase": "Running", "__meta_kubernetes_pod_label_app_kubernetes_io_name": "brickserve",
      "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
      "__meta_kubernetes_pod_annotation_prometheus_io_port": "9464",
      "__meta_kubernetes_pod_annotation_prometheus_io_path": "/internal/metrics"},
     {"instance": "[fd00::7]:9464", "__metrics_path__": "/internal/metrics", "pod": "brickserve-1"}),
    ({"__address__": "10.1.0.6:50051", "__meta_kubernetes_pod_ip": "10.1.0.6",
      "__meta_kubernetes_pod_name": "brickserve-unannotated", "__meta_kubernetes_pod_phase": "Running",
      "__meta_kubernetes_pod_label_app_kubernetes_io_name": "brickserve"}, None),
    ({"__address__": "10.1.0.7:9464", "__meta_kubernetes_pod_ip": "10.1.0.7",
      "__meta_kubernetes_pod_name": "brickserve-done", "__meta_kubernetes_pod_phase": "Succeeded",
      "__meta_kubernetes_pod_label_app_kubernetes_io_name": "brickserve",
      "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
      "__meta_kubernetes_pod_annotation_prometheus_io_port": "9464"}, None),
    ({"__address__": "10.1.0.8:8080", "__meta_kubernetes_pod_ip": "10.1.0.8",
      "__meta_kubernetes_pod_name": "other-app", "__meta_kubernetes_pod_phase": "Running",
      "__meta_kubernetes_pod_label_app_kubernetes_io_name": "other",
      "__meta_kubernetes_pod_annotation_prometheus_io_scrape": "true",
      "__meta_kubernetes_pod_annotation_prometheus_io_port": "8080"}, None),
]
K8S_ROLES = {"pod", "endpoints", "endpointslice", "service", "node", "ingress"}


def prometheus_config(deploy):
    return yaml.safe_load((deploy / "prometheus/prometheus.yml").read_text())


def with_file_sd(deploy, tmp):
    """A copy of prometheus.yml in tmp whose kubernetes_sd jobs read SD_PODS from a file_sd file."""
    config = prometheus_config(deploy)
    pods_file = tmp / "pods.json"
    pods_file.write_text(json.dumps([{"targets": [p["__address__"]],
                                      "labels": {k: v for k, v in p.items() if k != "__address__"}}
                                     for p, _ in SD_PODS]))
    k8s_jobs = []
    for job in config["scrape_configs"]:
        if "kubernetes_sd_configs" in job:
            for sd in job.pop("kubernetes_sd_configs"):
                if sd.get("role") not in K8S_ROLES:
                    raise Fail(f"job {job['job_name']}: kubernetes_sd role {sd.get('role')!r} "
                               f"is not one of {sorted(K8S_ROLES)}")
            job["file_sd_configs"] = [{"files": [str(pods_file)]}]
            k8s_jobs.append(job["job_name"])
    for rule_file in config.get("rule_files", []):
        shutil.copy(deploy / "prometheus" / rule_file, tmp / rule_file)
    path = tmp / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, k8s_jobs


def check_config_promtool(promtool, deploy):
    config = prometheus_config(deploy)
    if config.get("global", {}).get("scrape_interval") != "15s":
        raise Fail("prometheus.yml: global scrape_interval is not 15s")
    if "brickserve-alerts.yml" not in config.get("rule_files", []):
        raise Fail("prometheus.yml: rule_files does not load brickserve-alerts.yml")
    rc, out = run_promtool(promtool, "check", "config", str(deploy / "prometheus/prometheus.yml"))
    if rc == 0:
        return "SUCCESS (rule files resolved)"
    if "field kubernetes_sd_configs not found" not in out:
        raise Fail(f"promtool check config failed:\n{out}")
    with tempfile.TemporaryDirectory() as tmp:
        path, jobs = with_file_sd(deploy, Path(tmp))
        promtool_ok(promtool, "check", "config", str(path))
    return (f"SUCCESS with the kubernetes_sd of {jobs} as file_sd "
            "(this promtool is built without kubernetes_sd)")


def check_kubernetes_relabelling(promtool, deploy):
    with tempfile.TemporaryDirectory() as tmp:
        path, jobs = with_file_sd(deploy, Path(tmp))
        if not jobs:
            raise Fail("prometheus.yml has no kubernetes_sd job")
        for job in jobs:
            # File discovery answers at once; the timeout only bounds the wait for it.
            out = promtool_ok(promtool, "check", "service-discovery", "--timeout=2s", str(path), job,
                              stdout_only=True)
            targets = json.loads(out)
            got = {t["discoveredLabels"]["__meta_kubernetes_pod_name"]: t["labels"] for t in targets}
            for pod, want in SD_PODS:
                name = pod["__meta_kubernetes_pod_name"]
                labels = got.get(name)
                if labels is None:
                    raise Fail(f"job {job}: pod {name} was not discovered at all")
                if want is None and labels:
                    raise Fail(f"job {job}: pod {name} should be dropped, got target {labels}")
                if want is not None:
                    wrong = {k: (labels.get(k), v) for k, v in want.items() if labels.get(k) != v}
                    if wrong:
                        raise Fail(f"job {job}: pod {name}: (got, want) {wrong}")
    return (f"job {', '.join(jobs)}: {len(SD_PODS)} synthetic pods relabelled as intended "
            "(IPv4, IPv6, path annotation; unannotated, finished and other apps' pods dropped)")


# --- Grafana dashboard -------------------------------------------------------------------------

def dashboard(deploy):
    return json.loads((deploy / "grafana/brickserve-dashboard.json").read_text())


def all_panels(dash):
    for p in dash.get("panels", []):
        yield p
        yield from p.get("panels", [])  # panels inside collapsed rows


def dashboard_queries(dash):
    """(where, PromQL) for every panel target and every query variable."""
    out = []
    for p in all_panels(dash):
        for t in p.get("targets", []):
            out.append((f"panel {p.get('id')} {p.get('title')!r} target {t.get('refId')}", t.get("expr", "")))
    for v in dash["templating"]["list"]:
        if v.get("type") == "query":
            q = v["query"]["query"] if isinstance(v["query"], dict) else v["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*\w+\s*\)\s*", q)
            out.append((f"variable {v['name']}", m.group(1) if m else q))
    return out


def check_dashboard_shape(deploy):
    dash = dashboard(deploy)
    for key in ("uid", "title", "panels", "schemaVersion", "templating"):
        if not dash.get(key):
            raise Fail(f"dashboard: no {key}")
    if not 36 <= dash["schemaVersion"] <= 41:
        raise Fail(f"dashboard: schemaVersion {dash['schemaVersion']} is not a Grafana 9-12 dashboard")
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    ds = variables.get("datasource")
    if not ds or ds.get("type") != "datasource" or ds.get("query") != "prometheus":
        raise Fail("dashboard: no `datasource` variable of type datasource over prometheus")
    for name in ("job", "instance"):
        if name not in variables:
            raise Fail(f"dashboard: no `{name}` variable")
    ids, count = set(), 0
    for p in all_panels(dash):
        where = f"panel {p.get('id')} {p.get('title')!r}"
        if not p.get("id") or p["id"] in ids or not p.get("title") or not p.get("type"):
            raise Fail(f"{where}: needs a unique id, a title and a type")
        ids.add(p["id"])
        pos = p.get("gridPos", {})
        if not all(isinstance(pos.get(k), int) for k in "xywh") or pos["x"] + pos["w"] > 24:
            raise Fail(f"{where}: gridPos {pos} is not inside the 24-column grid")
        if p["type"] == "row":
            continue
        count += 1
        refs = [t.get("refId") for t in p.get("targets", [])]
        if not refs or len(refs) != len(set(refs)):
            raise Fail(f"{where}: needs targets with distinct refIds")
        for holder in [p] + p["targets"]:
            if holder.get("datasource", {}).get("uid") != "${datasource}":
                raise Fail(f"{where}: datasource is not the ${{datasource}} variable: {holder.get('datasource')}")
        for t in p["targets"]:
            if not t.get("expr", "").strip():
                raise Fail(f"{where} target {t['refId']}: empty expr")
    for where, expr in dashboard_queries(dash):
        unknown = grafana_vars(expr) - set(variables) - GRAFANA_BUILTINS
        if unknown:
            raise Fail(f"{where}: uses undefined variables {sorted(unknown)}")
    used = set().union(*(metric_names(e) for _, e in dashboard_queries(dash)))
    missing = DASHBOARD_MUST_USE - used
    if missing:
        raise Fail(f"dashboard charts none of {sorted(missing)}")
    return f"uid {dash['uid']!r}, {count} panels, variables {sorted(variables)}, every panel on ${{datasource}}"


def check_dashboard_promql(promtool, deploy):
    def concrete(expr):  # what Grafana sends, near enough for a parser
        expr = re.sub(r"\$\{?__rate_interval\}?|\$\{?__interval\}?", "1m", expr)
        expr = re.sub(r"\$\{?__range\}?", "1h", expr)
        return GRAFANA_VAR.sub(".*", expr)

    queries = dashboard_queries(dashboard(deploy))
    rules = [{"record": f"dashboard:query_{i}", "expr": concrete(e)} for i, (_, e) in enumerate(queries)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "dashboard-queries.yml"
        path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
        rc, out = run_promtool(promtool, "check", "rules", str(path))
        if rc != 0:
            bad = [w for i, (w, _) in enumerate(queries) if re.search(rf"\bdashboard:query_{i}\b", out)]
            raise Fail(f"dashboard queries that do not parse {bad or '(see below)'}:\n{out}")
    return f"{len(queries)} queries (panels and variables) parse as PromQL"


# --- metric names ------------------------------------------------------------------------------

def check_metric_names(deploy, source):
    families, histograms = exported_metrics(source)
    planned_exported = set(PLANNED) & families
    if planned_exported:
        raise Fail(f"{sorted(planned_exported)} is exported now: drop it from PLANNED in {Path(__file__).name} "
                   "and the 'planned' notes in deploy/")
    uses = [(f"alert {r['alert']}", r["expr"]) for r in alert_rules(deploy)]
    uses += [(f"dashboard {w}", e) for w, e in dashboard_queries(dashboard(deploy))]
    known, planned, unknown = set(), set(), []
    for where, expr in uses:
        for name in metric_names(expr):
            base = next((name[:-len(s)] for s in HISTOGRAM_SUFFIXES if name.endswith(s)), None)
            if name in PLANNED:
                planned.add(name)
            elif name in PROMETHEUS_SERIES or (name in families and name not in histograms) or base in histograms:
                known.add(name)
            else:
                hint = " (a histogram: use _bucket, _sum or _count)" if name in histograms else ""
                unknown.append(f"{where}: {name}{hint}")
    if unknown:
        raise Fail("metrics not exported by the server:\n  " + "\n  ".join(unknown))
    return (f"{len(known)} names exported ({', '.join(sorted(known))})"
            + ("; planned, not exported yet: " + ", ".join(f"{n} ({PLANNED[n]})" for n in sorted(planned))
               if planned else ""))


def check_extractor():
    expr = ('sum by (le) (rate(a_bucket{x="y{z}", job=~"$job"}[$__rate_interval])) / ignoring(code) group_left '
            'b:c offset 5m > bool 1e3 and on (instance) histogram_quantile(0.9, d) unless time() - e[5m:1m]')
    got = metric_names(expr)
    if got != {"a_bucket", "b:c", "d", "e"}:
        raise Fail(f"metric name extractor: got {sorted(got)}")
    return "extracts selectors, skips functions, label lists, strings, ranges and numbers"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", required=True, type=Path, help="the deploy/ directory")
    parser.add_argument("--metrics-source", required=True, type=Path, help="server/metrics/server_metrics.cc")
    args = parser.parse_args()
    promtool = shutil.which("promtool")
    if promtool is None:
        print("SKIP: promtool not found (Debian: apt-get install prometheus)")
        return 77
    deploy = args.deploy.resolve()

    checks = [
        ("metric name extractor", check_extractor),
        ("alert rules: promtool check rules", lambda: check_rules_promtool(promtool, deploy)),
        ("alert rules: shape", lambda: check_rules_shape(deploy)),
        ("alert rules: promtool test rules", lambda: check_rules_unit_tests(promtool, deploy)),
        ("scrape config: promtool check config", lambda: check_config_promtool(promtool, deploy)),
        ("scrape config: kubernetes relabelling", lambda: check_kubernetes_relabelling(promtool, deploy)),
        ("dashboard: importable shape", lambda: check_dashboard_shape(deploy)),
        ("dashboard: PromQL parses", lambda: check_dashboard_promql(promtool, deploy)),
        ("metric names exist in " + args.metrics_source.name,
         lambda: check_metric_names(deploy, args.metrics_source)),
    ]
    passed = failed = 0
    for name, check in checks:
        try:
            detail = check()
            passed += 1
            print(f"ok   {name}: {detail}")
        except (Fail, OSError, KeyError, ValueError, yaml.YAMLError, subprocess.TimeoutExpired) as e:
            failed += 1
            print(f"FAIL {name}: {type(e).__name__ + ': ' if not isinstance(e, Fail) else ''}{e}")
    print(f"monitoring_test: {passed} passed, {failed} failed")
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
