#!/usr/bin/env python3
"""Checks the Helm chart helm/brickserve without a cluster.

Runs `helm lint --strict` and `helm template` on the default values and on variants (GPU, HPA,
ServiceMonitor with other ports, hostPath, model image, existing claim, bricks), parses the
manifests and checks what a deployment depends on: gRPC probes on the gRPC port, the Service and
ServiceMonitor ports equal to the ones in the rendered server config, the config file the container
reads is the one mounted from the ConfigMap (and parses as brickserve.v1.ServerConfig when protoc and
python3-protobuf are present), config.serverConfig and the start-up bricks carried into it, the
admin token Secret mounted (that key only, read-only) where admin_token_file points, the brick claim
mounted read-only where brick_dir points, non-root security context, resources, GPU requests and
device, the HPA's queue-depth metric, the PDB. Then values the schema or the chart's guards must
refuse.

  python3 tests/deploy/helm_chart_test.py --chart helm/brickserve [--helm PATH]

helm: --helm, else tools/helm/bin/helm, else helm on PATH, else scripts/install_helm.sh.
Exit 0 passed, 1 failed, 77 skipped (no helm to be had).
"""
import argparse
import copy
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
SKIP = 77
RELEASE = "brick"
NAMESPACE = "serving"
STANDARD_LABELS = ("helm.sh/chart", "app.kubernetes.io/name", "app.kubernetes.io/instance",
                   "app.kubernetes.io/version", "app.kubernetes.io/managed-by")
# ServerConfig fields the chart writes itself (bricks from .Values.bricks, admin_token_file from
# bricksAdmin); config.serverConfig holds the others. brick_dir is in both: brickVolume.watch sets it.
CHART_OWNED_FIELDS = {"model", "listen", "device", "metrics_listen", "bricks", "admin_token_file"}
ADMIN_TOKEN_DIR = "/etc/brickserve-admin"
SHA = "0123456789abcdef0123456789ABCDEF0123456789abcdef0123456789abcdef"
QUEUE_METRIC = "brickserve_queued_requests"

GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
GPU_AFFINITY = {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
    {"matchExpressions": [{"key": "nvidia.com/gpu.product", "operator": "In", "values": ["NVIDIA-H100-80GB-HBM3"]}]}]}}}

# name -> values overriding the chart's defaults.
VARIANTS = {
    "default": {},
    "gpu": {
        "gpu": {"enabled": True, "count": 2, "runtimeClassName": "nvidia"},
        "nodeSelector": {"nvidia.com/gpu.present": "true"},
        "tolerations": [GPU_TOLERATION],
        "affinity": GPU_AFFINITY,
        "strategy": {"type": "Recreate"},
    },
    "hpa": {"autoscaling": {"enabled": True, "minReplicas": 2, "maxReplicas": 6, "targetQueuedRequests": "3"}},
    "servicemonitor": {
        "serviceMonitor": {"enabled": True, "labels": {"release": "kube-prometheus-stack"}, "interval": "30s"},
        "service": {"grpcPort": 7000, "metricsPort": 9100},
    },
    "hostpath": {"model": {"source": "hostPath", "hostPath": {"path": "/srv/models"}, "subPath": "llama-3-8b"}},
    "image": {"model": {"source": "image", "image": {"repository": "registry.example/models/llama", "tag": "3-8b"}}},
    "existing-claim": {
        "model": {"pvc": {"existingClaim": "models-ro", "create": False}},
        "config": {"serverConfig": {"max_context": 8192, "prefix_cache": False,
                                    "limits": {"max_request_bytes": 8388608, "max_queued_tokens": 100000}}},
        "bricks": [{"name": "sql", "path": "/models/bricks/sql"}],
        "podDisruptionBudget": {"minAvailable": "50%", "maxUnavailable": None},
    },
    # Start-up bricks (one path that needs escaping), the admin token Secret, a watched brick claim.
    "bricks": {
        "bricks": [{"name": "sql", "path": "/bricks/sql", "sha256": SHA},
                   {"name": "Code-v2.1_x", "path": '/bricks/code "v2" \\ näive', "sha256": ""},
                   {"name": "chat", "path": "/models/bricks/chat"}],
        "bricksAdmin": {"existingSecret": "brickserve-admin", "secretKey": "admin.token"},
        "brickVolume": {"enabled": True, "existingClaim": "bricks-ro"},
        "config": {"serverConfig": {"brick_memory_budget_mb": 4096, "brick_dir_poll_s": 5,
                                    "core_map": "/tmp/core_map.json", "core_guard_max_relative_delta": 0.25,
                                    "core_map_ratio": 80, "brick_roots": ["/bricks", "/srv/more bricks"],
                                    "limits": {"max_bricks_per_request": 4}}},
    },
    # The claim mounted elsewhere and not watched; a brick_dir in another volume instead.
    "bricks-unwatched": {
        "brickVolume": {"enabled": True, "existingClaim": "bricks-ro", "mountPath": "/srv/bricks", "watch": False},
        "config": {"serverConfig": {"brick_dir": "/models/bricks"}},
        "bricks": [{"name": "sql", "path": "/srv/bricks/sql"}],
    },
}

# (what, helm template arguments, text the error must contain): the schema's and the guards' refusals.
MUST_FAIL = [
    ("schema: negative replicaCount", ["--set", "replicaCount=-1"], "replicaCount"),
    ("schema: port of the wrong type", ["--set-string", "service.grpcPort=grpc"], "service.grpcPort"),
    ("schema: unknown model.source", ["--set", "model.source=nfs"], "model.source"),
    ("schema: misspelt server config field", ["--set", "config.serverConfig.thread=2"], "thread"),
    ("schema: chart-owned field in serverConfig", ["--set", "config.serverConfig.listen=0.0.0.0:1"], "listen"),
    ("schema: negative server config value", ["--set", "config.serverConfig.limits.max_new_tokens=-5"],
     "max_new_tokens"),
    ("schema: bad resource quantity", ["--set", "resources.limits.memory=lots"], "resources.limits.memory"),
    ("guard: pvc without a claim", ["--set", "model.pvc.create=false"], "model.pvc.existingClaim"),
    ("guard: hostPath without a path", ["--set", "model.source=hostPath"], "model.hostPath.path"),
    ("guard: image without a repository", ["--set", "model.source=image"], "model.image.repository"),
    ("guard: one port for gRPC and metrics", ["--set", "service.metricsPort=50051"], "service.metricsPort"),
    ("guard: grace period shorter than the drain", ["--set", "terminationGracePeriodSeconds=10"],
     "terminationGracePeriodSeconds"),
    ("guard: both PDB bounds", ["--set", "podDisruptionBudget.minAvailable=1"], "exactly one of"),
    ("schema: bad brick name", ["--set", "bricks[0].name=sql/v2,bricks[0].path=/bricks/sql"], "bricks.0.name"),
    ("schema: brick name over 128 characters", ["--set", f"bricks[0].name={'a' * 129},bricks[0].path=/bricks/a"],
     "bricks.0.name"),
    ("schema: relative brick path", ["--set", "bricks[0].name=sql,bricks[0].path=bricks/sql"], "bricks.0.path"),
    ("schema: brick without a path", ["--set", "bricks[0].name=sql"], "path is required"),
    ("schema: bad brick sha256", ["--set", f"bricks[0].name=sql,bricks[0].path=/bricks/sql,bricks[0].sha256={SHA[:-1]}"],
     "bricks.0.sha256"),
    ("schema: non-hex brick sha256", ["--set", f"bricks[0].name=sql,bricks[0].path=/bricks/sql,"
                                               f"bricks[0].sha256={SHA[:-1]}g"], "bricks.0.sha256"),
    ("schema: unknown brick key (the old kind)", ["--set", "bricks[0].name=sql,bricks[0].path=/b,bricks[0].kind=lora"],
     "kind"),
    ("schema: admin_token_file is the chart's", ["--set", "config.serverConfig.admin_token_file=/token"],
     "admin_token_file"),
    ("schema: relative brick_dir", ["--set", "config.serverConfig.brick_dir=bricks"], "config.serverConfig.brick_dir"),
    ("schema: negative brick memory budget", ["--set", "config.serverConfig.brick_memory_budget_mb=-1"],
     "brick_memory_budget_mb"),
    ("schema: negative max_bricks_per_request", ["--set", "config.serverConfig.limits.max_bricks_per_request=-1"],
     "max_bricks_per_request"),
    ("schema: relative brickVolume.mountPath", ["--set", "brickVolume.mountPath=bricks"], "brickVolume.mountPath"),
    ("schema: admin secret key escaping its directory",
     ["--set", "bricksAdmin.existingSecret=admin,bricksAdmin.secretKey=../token"], "bricksAdmin.secretKey"),
    ("schema: admin secret name not a Kubernetes name", ["--set", "bricksAdmin.existingSecret=Admin_Token"],
     "bricksAdmin.existingSecret"),
    ("guard: duplicate brick names", ["--set", "bricks[0].name=sql,bricks[0].path=/b/1,bricks[1].name=chat,"
                                               "bricks[1].path=/b/2,bricks[2].name=sql,bricks[2].path=/b/3"],
     'bricks[2].name "sql" is listed twice'),
    ("guard: brick volume without a claim", ["--set", "brickVolume.enabled=true"], "brickVolume.existingClaim"),
    ("guard: two watched brick directories", ["--set", "brickVolume.enabled=true,brickVolume.existingClaim=b,"
                                                       "config.serverConfig.brick_dir=/models/bricks"],
     "config.serverConfig.brick_dir"),
    ("guard: brick volume over the model", ["--set", "brickVolume.enabled=true,brickVolume.existingClaim=b,"
                                                     "brickVolume.mountPath=/models"], "brickVolume.mountPath"),
]


class Checker:
    def __init__(self):
        self.failures = []
        self.passed = 0

    def check(self, cond, what):
        if cond:
            self.passed += 1
            print(f"  ok    {what}")
        else:
            self.failures.append(what)
            print(f"  FAIL  {what}")
        return cond


def find_helm(explicit):
    if explicit:
        return explicit
    local = REPO / "tools/helm/bin/helm"
    if os.access(local, os.X_OK):
        return str(local)
    on_path = shutil.which("helm")
    if on_path:
        return on_path
    installer = REPO / "scripts/install_helm.sh"
    if installer.exists():
        r = subprocess.run(["bash", str(installer)], capture_output=True, text=True)
        path = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
        if r.returncode == 0 and os.access(path, os.X_OK):
            return path
        print(f"scripts/install_helm.sh failed: {r.stderr.strip()}", file=sys.stderr)
    return None


def deep_merge(base, override):
    out = copy.deepcopy(base)
    for k, v in override.items():
        out[k] = deep_merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Messages that repeat in ServerConfig; parse_textproto lists them instead of flattening them.
REPEATED_MESSAGES = {"bricks"}
REPEATED_SCALARS = {"brick_roots"}  # `key: value` lines that may repeat, read as a list


def parse_textproto(text):
    """The rendered server config as (flat fields, repeated messages).

    Flat fields: {"listen": "...", "limits.max_new_tokens": 5, ...}; a singular field set twice is
    an error. Repeated messages: {"bricks": [{"name": ..., "path": ...}, ...]} in file order.
    Strings are read as JSON strings, which is what the chart's `quote` writes for the characters
    the schema lets through (Go %q escapes, a subset of both JSON and text format).
    """
    fields, repeated, stack = {}, {}, []
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):  # the chart writes whole-line comments only
            continue
        if m := re.fullmatch(r"(\w+)\s*\{", line):
            stack.append(m.group(1))
            if len(stack) == 1 and stack[0] in REPEATED_MESSAGES:
                repeated.setdefault(stack[0], []).append({})
        elif line == "}":
            assert stack, f"server config line {n}: unbalanced '}}'"
            stack.pop()
        elif m := re.fullmatch(r'(\w+):\s*("(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?|true|false)', line):
            value = m.group(2)
            value = (json.loads(value) if value.startswith('"') else
                     value == "true" if value in ("true", "false") else
                     float(value) if "." in value else int(value))
            if stack and stack[0] in REPEATED_MESSAGES:
                target, key = repeated[stack[0]][-1], ".".join(stack[1:] + [m.group(1)])
            else:
                target, key = fields, ".".join(stack + [m.group(1)])
            if key in REPEATED_SCALARS:
                target.setdefault(key, []).append(value)
                continue
            assert key not in target, f"server config line {n}: {key} is set twice"
            target[key] = value
        else:
            raise AssertionError(f"server config line {n} is not 'field: value' text format: {raw!r}")
    assert not stack, "server config: unclosed message"
    return fields, repeated


def flatten(values, prefix=""):
    """{"limits": {"a": 1}} -> {"limits.a": 1}."""
    out = {}
    for k, v in values.items():
        if isinstance(v, dict):
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def load_server_config_proto(tmp):
    """ServerConfig from proto/brickserve/v1/server_config.proto via protoc + python3-protobuf, or None."""
    proto = REPO / "proto/brickserve/v1/server_config.proto"
    if not proto.exists() or not shutil.which("protoc"):
        return None
    try:
        from google.protobuf import text_format  # noqa: F401
    except ImportError:
        return None
    out = Path(tmp) / "pb"
    out.mkdir()
    subprocess.run(["protoc", f"-I{REPO / 'proto'}", f"--python_out={out}", "brickserve/v1/server_config.proto"],
                   check=True)
    spec = importlib.util.spec_from_file_location("server_config_pb2", out / "brickserve/v1/server_config_pb2.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.ServerConfig


def proto_fields(message):
    """Field names of a message in server_config.proto (for the schema cross-check)."""
    text = (REPO / "proto/brickserve/v1/server_config.proto").read_text()
    body = re.search(r"message %s \{(.*?)\n\}" % message, text, re.S).group(1)
    return set(re.findall(r"^\s*(?:optional\s+|repeated\s+)?\w+\s+(\w+)\s*=\s*\d+;", body, re.M))


class ChartTest:
    def __init__(self, helm, chart, tmp):
        self.helm, self.chart, self.tmp = helm, chart, Path(tmp)
        self.c = Checker()
        self.defaults = yaml.safe_load((Path(chart) / "values.yaml").read_text())
        self.server_config_msg = load_server_config_proto(tmp)

    def helm_run(self, *args):
        return subprocess.run([self.helm, *args], capture_output=True, text=True)

    def values_file(self, name, values):
        path = self.tmp / f"values-{name}.yaml"
        path.write_text(yaml.safe_dump(values))
        return str(path)

    def template(self, values_file, chart=None):
        r = self.helm_run("template", RELEASE, chart or self.chart, "--namespace", NAMESPACE, "-f", values_file)
        if r.returncode != 0:
            raise AssertionError(f"helm template failed:\n{r.stderr}")
        return [d for d in yaml.safe_load_all(r.stdout) if d]

    # --- the checks ------------------------------------------------------------------------------

    def run(self):
        c = self.c
        print(f"helm: {self.helm_run('version', '--short').stdout.strip()}; chart: {self.chart}")
        self.check_schema_matches_proto()
        for name, overrides in VARIANTS.items():
            print(f"\n[{name}] {json.dumps(overrides) if overrides else '(chart defaults)'}")
            vf = self.values_file(name, overrides)
            lint = self.helm_run("lint", "--strict", self.chart, "--namespace", NAMESPACE, "-f", vf)
            c.check(lint.returncode == 0, "helm lint --strict passes" + ("" if lint.returncode == 0 else
                                                                          f":\n{lint.stdout}{lint.stderr}"))
            try:
                docs = self.template(vf)
            except AssertionError as e:
                c.check(False, str(e))
                continue
            self.check_variant(name, deep_merge(self.defaults, overrides), docs)
        print("\n[NOTES.txt]")
        self.check_notes()
        print("\n[values the chart must refuse]")
        self.check_refusals()
        print(f"\n{c.passed} checks passed, {len(c.failures)} failed")
        for f in c.failures:
            print(f"FAILED: {f.splitlines()[0]}")
        return 1 if c.failures else 0

    def check_schema_matches_proto(self):
        c = self.c
        if not (REPO / "proto/brickserve/v1/server_config.proto").exists():
            print("note: no proto/ next to the test; schema-versus-proto check skipped")
            return
        print("\n[values.schema.json versus server_config.proto]")
        schema = json.loads((Path(self.chart) / "values.schema.json").read_text())
        sc = schema["properties"]["config"]["properties"]["serverConfig"]
        in_schema = set(sc["properties"])
        in_proto = proto_fields("ServerConfig") - CHART_OWNED_FIELDS
        c.check(in_schema == in_proto, f"config.serverConfig in the schema has exactly the ServerConfig fields the "
                f"chart does not own (schema only: {sorted(in_schema - in_proto)}, proto only: "
                f"{sorted(in_proto - in_schema)})")
        limits = set(sc["properties"]["limits"]["properties"])
        c.check(limits == proto_fields("ServerLimits"), f"config.serverConfig.limits has exactly the ServerLimits "
                f"fields (schema: {sorted(limits)})")
        c.check(sc.get("additionalProperties") is False, "the schema refuses unknown server config fields")

    def check_variant(self, name, values, docs):
        c = self.c
        by_kind = {}
        for d in docs:
            by_kind.setdefault(d["kind"], []).append(d)
        kinds = sorted(by_kind)
        one = lambda kind: by_kind.get(kind, [None])[0]
        expected = {"ConfigMap", "Service", "Deployment", "ServiceAccount", "PodDisruptionBudget"}
        for kind in expected:
            c.check(len(by_kind.get(kind, [])) == 1, f"renders one {kind} (kinds: {kinds})")
        hpa_on, sm_on = values["autoscaling"]["enabled"], values["serviceMonitor"]["enabled"]
        c.check(("HorizontalPodAutoscaler" in by_kind) == hpa_on, f"HorizontalPodAutoscaler rendered iff "
                f"autoscaling.enabled ({hpa_on})")
        c.check(("ServiceMonitor" in by_kind) == sm_on, f"ServiceMonitor rendered iff serviceMonitor.enabled ({sm_on})")
        for d in docs:
            labels = d["metadata"].get("labels", {})
            missing = [l for l in STANDARD_LABELS if l not in labels]
            c.check(not missing, f"{d['kind']} {d['metadata']['name']} has the standard labels (missing: {missing})")
        dep, svc, cm = one("Deployment"), one("Service"), one("ConfigMap")
        if not (dep and svc and cm):
            return
        pod = dep["spec"]["template"]["spec"]
        containers = {x["name"]: x for x in pod["containers"]}
        ctr = containers.get("brickserve")
        if not c.check(ctr is not None, "the Deployment has a container named brickserve"):
            return
        ports = {p["name"]: p["containerPort"] for p in ctr.get("ports", [])}
        c.check(set(ports) == {"grpc", "metrics"}, f"container ports are named grpc and metrics ({ports})")

        # The config file the container reads is the ConfigMap's server.textproto, mounted.
        args = ctr.get("args", [])
        c.check(args[:2] == ["serve", "--config"] and len(args) == 3,
                f"container args are serve --config FILE ({args})")
        config_path = args[-1] if args else ""
        mounts = {m["mountPath"]: m for m in ctr.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}
        config_dir, config_key = os.path.split(config_path)
        mount = mounts.get(config_dir)
        vol = volumes.get(mount["name"]) if mount else None
        c.check(vol is not None and vol.get("configMap", {}).get("name") == cm["metadata"]["name"],
                f"{config_dir} is mounted from ConfigMap {cm['metadata']['name']}")
        c.check(mount is not None and mount.get("readOnly") is True, f"{config_dir} is mounted read-only")
        c.check(config_key in cm["data"], f"the ConfigMap has {config_key}, the file passed to --config")
        c.check(set(cm["data"]) == {config_key}, f"the ConfigMap holds only {config_key} (no separate bricks.yaml: "
                f"start-up bricks are in the server config) ({sorted(cm['data'])})")
        annotations = dep["spec"]["template"]["metadata"].get("annotations", {})
        c.check("checksum/config" in annotations, "the pod template carries checksum/config (rolls on config change)")

        text = cm["data"].get(config_key, "")
        try:
            cfg, repeated = parse_textproto(text)
            c.check(True, "the server config is field: value text format")
        except AssertionError as e:
            c.check(False, str(e))
            return
        msg = None
        if self.server_config_msg is not None:
            from google.protobuf import text_format
            try:
                msg = text_format.Parse(text, self.server_config_msg())
                c.check(True, "the server config parses as brickserve.v1.ServerConfig (protoc + python3-protobuf)")
            except text_format.ParseError as e:
                c.check(False, f"the server config parses as brickserve.v1.ServerConfig: {e}")

        # config.serverConfig reaches the server: every set field, with its value.
        passed = {k: v for k, v in flatten(values["config"]["serverConfig"]).items()
                  if v is not None and v != "" and v != [] and not (type(v) is int and v == 0) and k != "brick_dir"}
        wrong = {k: (cfg.get(k), v) for k, v in passed.items() if cfg.get(k) != v}
        c.check(not wrong, f"the server config has config.serverConfig's fields {sorted(passed)} "
                f"(wrong, as (rendered, values): {wrong})")
        self.check_bricks(values, cfg, repeated, msg, pod, ctr)

        # Ports: server config == container ports == Service ports == probes.
        listen, metrics_listen = cfg.get("listen", ""), cfg.get("metrics_listen", "")
        m1, m2 = re.fullmatch(r"0\.0\.0\.0:(\d+)", listen), re.fullmatch(r"0\.0\.0\.0:(\d+)", metrics_listen)
        c.check(m1 is not None, f'listen = "{listen}" binds all interfaces (kubelet probes, Service)')
        c.check(m2 is not None, f'metrics_listen = "{metrics_listen}" binds all interfaces')
        grpc_port = int(m1.group(1)) if m1 else None
        metrics_port = int(m2.group(1)) if m2 else None
        c.check(grpc_port == values["service"]["grpcPort"], f"listen port {grpc_port} is service.grpcPort")
        c.check(metrics_port == values["service"]["metricsPort"], f"metrics_listen port {metrics_port} is "
                "service.metricsPort")
        c.check(ports.get("grpc") == grpc_port, f"container port grpc {ports.get('grpc')} is the listen port")
        c.check(ports.get("metrics") == metrics_port, f"container port metrics {ports.get('metrics')} is the "
                "metrics_listen port")
        svc_ports = {p["name"]: p for p in svc["spec"]["ports"]}
        for pname, port in (("grpc", grpc_port), ("metrics", metrics_port)):
            sp = svc_ports.get(pname)
            c.check(sp is not None and sp["port"] == port and sp["targetPort"] in (pname, port),
                    f"Service port {pname} is {port} and targets the container's {pname} port ({sp})")
        c.check(svc["spec"]["selector"] == dep["spec"]["selector"]["matchLabels"],
                "Service selector is the Deployment's selector")
        pod_labels = dep["spec"]["template"]["metadata"]["labels"]
        c.check(dep["spec"]["selector"]["matchLabels"].items() <= pod_labels.items(),
                "the Deployment's selector matches its pod labels")

        # Probes: native gRPC health on the gRPC port.
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            p = ctr.get(probe)
            c.check(p is not None and set(p) & {"grpc", "httpGet", "tcpSocket", "exec"} == {"grpc"}
                    and p["grpc"]["port"] == grpc_port, f"{probe} is a grpc probe on the gRPC port {grpc_port} ({p})")
        sp = ctr.get("startupProbe") or {}
        budget = sp.get("periodSeconds", 10) * sp.get("failureThreshold", 3)
        c.check(budget >= 120, f"the startup probe allows {budget} s for the model load (>= 120 s)")

        # Drain: grace period above shutdown_grace_s plus the preStop sleep.
        grace = cfg.get("shutdown_grace_s") or 5
        pre_stop = ctr.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command", [])
        sleep = int(pre_stop[1]) if pre_stop[:1] == ["sleep"] else 0
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        c.check(tgps > grace + sleep, f"terminationGracePeriodSeconds {tgps} > shutdown_grace_s {grace} + "
                f"preStop sleep {sleep}")

        # Security and resources.
        psc, csc = pod.get("securityContext", {}), ctr.get("securityContext", {})
        c.check(psc.get("runAsNonRoot") is True and psc.get("runAsUser") == 10001,
                "pod securityContext: runAsNonRoot, uid 10001 (the image's user)")
        c.check(csc.get("runAsNonRoot") is True and csc.get("readOnlyRootFilesystem") is True
                and csc.get("allowPrivilegeEscalation") is False
                and "ALL" in csc.get("capabilities", {}).get("drop", []),
                "container securityContext: non-root, read-only root filesystem, no privilege escalation, "
                "no capabilities")
        c.check("/tmp" in mounts, "/tmp is a writable emptyDir (the root filesystem is read-only)")
        res = ctr.get("resources", {})
        req, lim = res.get("requests", {}), res.get("limits", {})
        c.check({"cpu", "memory"} <= req.keys() and {"cpu", "memory"} <= lim.keys(),
                f"resources: cpu and memory requests and limits ({res})")

        # Model volume: read-only at the directory the config names.
        model_mount = next((m for m in ctr.get("volumeMounts", []) if m["name"] == "model"), None)
        model_path = cfg.get("model", "")
        mount_path = values["model"]["mountPath"]
        c.check(model_mount is not None and model_mount["mountPath"] == mount_path
                and model_mount.get("readOnly") is True, f"the model volume is mounted read-only at {mount_path}")
        sub = values["model"]["subPath"].strip("/")
        c.check(model_path == (f"{mount_path}/{sub}" if sub else mount_path), f'model = "{model_path}"')
        model_vol = volumes.get("model", {})
        source = values["model"]["source"]
        pvcs = by_kind.get("PersistentVolumeClaim", [])
        if source == "pvc":
            claim = model_vol.get("persistentVolumeClaim", {}).get("claimName")
            existing = values["model"]["pvc"]["existingClaim"]
            if existing:
                c.check(claim == existing and not pvcs, f"model volume is the existing claim {existing}, none created")
            else:
                c.check(len(pvcs) == 1 and pvcs[0]["metadata"]["name"] == claim,
                        f"model volume is the claim the chart creates ({claim})")
                c.check(pvcs and pvcs[0]["metadata"].get("annotations", {}).get("helm.sh/resource-policy") == "keep",
                        "the created claim survives helm uninstall (resource-policy keep)")
        elif source == "hostPath":
            c.check(model_vol.get("hostPath", {}).get("path") == values["model"]["hostPath"]["path"] and not pvcs,
                    f"model volume is hostPath {values['model']['hostPath']['path']}")
        else:
            inits = pod.get("initContainers", [])
            img = values["model"]["image"]
            c.check("emptyDir" in model_vol and not pvcs, "model volume is an emptyDir")
            c.check(len(inits) == 1 and inits[0]["image"] == f"{img['repository']}:{img['tag']}",
                    f"an init container runs the model image {img['repository']}:{img['tag']}")
            if inits:
                im = {m["name"]: m for m in inits[0].get("volumeMounts", [])}
                c.check("model" in im and im["model"]["mountPath"] == mount_path and not im["model"].get("readOnly"),
                        "the init container writes the model volume")
                c.check(inits[0]["command"][-2:] == [f"{img['path'].rstrip('/')}/.", f"{mount_path}/"],
                        f"it copies {img['path']} into {mount_path} ({inits[0]['command']})")
                c.check(inits[0].get("securityContext", {}).get("runAsNonRoot") is True
                        and inits[0].get("resources"), "the init container runs non-root with resources")

        # Device and GPU.
        gpu = values["gpu"]
        if gpu["enabled"]:
            rn = gpu["resourceName"]
            c.check(cfg.get("device") == "cuda", f'GPU: device = "{cfg.get("device")}" is cuda')
            c.check(str(lim.get(rn)) == str(gpu["count"]) and str(req.get(rn)) == str(gpu["count"]),
                    f"GPU: {rn} limit and request are {gpu['count']}")
            c.check(pod.get("runtimeClassName") == gpu["runtimeClassName"], "GPU: runtimeClassName set")
        else:
            c.check(cfg.get("device") == "cpu", f'CPU: device = "{cfg.get("device")}" is cpu')
            c.check(not any("gpu" in k for k in list(lim) + list(req)), "CPU: no GPU requested")
        for key in ("nodeSelector", "tolerations", "affinity"):
            want = values[key] or None
            c.check(pod.get(key) == want, f"{key} is the values' ({want})")

        # Replicas, PDB, HPA.
        pdb = one("PodDisruptionBudget")
        c.check(pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"],
                "PodDisruptionBudget selects the Deployment's pods")
        bounds = {k: v for k, v in values["podDisruptionBudget"].items() if k != "enabled" and v is not None}
        c.check({k: pdb["spec"].get(k) for k in bounds} == bounds and
                len({"minAvailable", "maxUnavailable"} & pdb["spec"].keys()) == 1,
                f"PodDisruptionBudget has {bounds}")
        if hpa_on:
            hpa = one("HorizontalPodAutoscaler")
            a = values["autoscaling"]
            c.check("replicas" not in dep["spec"], "with the HPA the Deployment leaves replicas to it")
            c.check(hpa["apiVersion"] == "autoscaling/v2", "HPA is autoscaling/v2")
            c.check(hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                      "name": dep["metadata"]["name"]}, "HPA targets the Deployment")
            c.check((hpa["spec"]["minReplicas"], hpa["spec"]["maxReplicas"]) == (a["minReplicas"], a["maxReplicas"]),
                    f"HPA scales {a['minReplicas']}..{a['maxReplicas']}")
            queue = [m for m in hpa["spec"]["metrics"] if m["type"] == "Pods"
                     and m["pods"]["metric"]["name"] == QUEUE_METRIC]
            c.check(len(queue) == 1 and queue[0]["pods"]["target"] == {"type": "AverageValue",
                                                                     "averageValue": a["targetQueuedRequests"]},
                    f"HPA scales on the pods metric {QUEUE_METRIC} (AverageValue {a['targetQueuedRequests']})")
        else:
            c.check(dep["spec"].get("replicas") == values["replicaCount"], f"replicas = {values['replicaCount']}")

        if sm_on:
            sm = one("ServiceMonitor")
            c.check(sm["apiVersion"] == "monitoring.coreos.com/v1", "ServiceMonitor is monitoring.coreos.com/v1")
            sel = sm["spec"]["selector"]["matchLabels"]
            c.check(sel.items() <= svc["metadata"]["labels"].items(),
                    f"ServiceMonitor selects the Service's labels {sel}")
            c.check(sm["spec"].get("namespaceSelector", {}).get("matchNames") == [NAMESPACE],
                    "ServiceMonitor looks in the release namespace")
            eps = sm["spec"]["endpoints"]
            c.check(len(eps) == 1 and svc_ports.get(eps[0].get("port"), {}).get("port") == metrics_port
                    and eps[0].get("path") == "/metrics",
                    f"ServiceMonitor scrapes /metrics on the Service port carrying metrics_listen's {metrics_port}")
            c.check(eps and eps[0].get("interval") == values["serviceMonitor"]["interval"],
                    "scrape interval from values")
            c.check(values["serviceMonitor"]["labels"].items() <= sm["metadata"]["labels"].items(),
                    "ServiceMonitor carries serviceMonitor.labels (for the Prometheus selector)")

    def check_bricks(self, values, cfg, repeated, msg, pod, ctr):
        """Start-up bricks in the config; the admin token Secret and the brick claim, mounted read-only."""
        c = self.c
        want = [{k: v for k, v in b.items() if v} for b in values["bricks"]]
        got = repeated.get("bricks", [])
        c.check(got == want, f"the server config lists the start-up bricks in order, as "
                f"bricks {{ name path sha256 }} ({len(want)}: {[b['name'] for b in want]}; got {got})")
        if msg is not None:
            as_proto = [{"name": b.name, "path": b.path, **({"sha256": b.sha256} if b.sha256 else {})}
                        for b in msg.bricks]
            c.check(as_proto == want, f"ServerConfig.bricks parsed by protobuf are the values' bricks ({as_proto})")
            sc = values.get("config", {}).get("serverConfig", {})
            if "core_guard_max_relative_delta" in sc:
                # A fraction must survive the chart's number rendering (whole numbers print as int64).
                c.check(abs(msg.core_guard_max_relative_delta - sc["core_guard_max_relative_delta"]) < 1e-12
                        and msg.core_map_ratio == sc["core_map_ratio"] and msg.core_map == sc["core_map"],
                        f"core guard settings parsed by protobuf ({msg.core_guard_max_relative_delta}, "
                        f"{msg.core_map_ratio}, {msg.core_map!r})")
            want_roots = sc.get("brick_roots") or []
            c.check(list(msg.brick_roots) == want_roots,
                    f"brick_roots parsed by protobuf are the values' ({list(msg.brick_roots)})")
        mounts = {m["name"]: m for m in ctr.get("volumeMounts", [])}
        volumes = {v["name"]: v for v in pod.get("volumes", [])}

        # Admin token: only the key, from the Secret, read-only, where admin_token_file points.
        admin = values["bricksAdmin"]
        token_file = cfg.get("admin_token_file")
        secret_vols = [v for v in pod.get("volumes", []) if "secret" in v]
        if admin["existingSecret"]:
            want_file = f"{ADMIN_TOKEN_DIR}/{admin['secretKey']}"
            c.check(token_file == want_file, f'admin_token_file = "{token_file}" is {want_file}')
            if msg is not None:
                c.check(msg.admin_token_file == want_file, "ServerConfig.admin_token_file parsed by protobuf")
            vol = next((v for v in secret_vols if v["secret"].get("secretName") == admin["existingSecret"]), None)
            c.check(vol is not None and len(secret_vols) == 1,
                    f"one Secret volume, of Secret {admin['existingSecret']} ({secret_vols})")
            if vol:
                items = vol["secret"].get("items")
                c.check(items == [{"key": admin["secretKey"], "path": admin["secretKey"]}],
                        f"the Secret volume holds only key {admin['secretKey']}, as a file of that name ({items})")
                mode = vol["secret"].get("defaultMode")
                c.check(mode is not None and mode & 0o037 == 0,
                        f"the token file is neither group-writable nor readable by others (defaultMode "
                        f"{oct(mode) if mode is not None else None})")
                m = mounts.get(vol["name"])
                c.check(m is not None and m["mountPath"] == ADMIN_TOKEN_DIR and m.get("readOnly") is True
                        and not m.get("subPath"),
                        f"the Secret is mounted read-only at {ADMIN_TOKEN_DIR} ({m}), so admin_token_file exists")
        else:
            c.check(token_file is None and (msg is None or not msg.admin_token_file) and not secret_vols,
                    "without bricksAdmin.existingSecret: no admin_token_file, no Secret mounted")

        # Brick claim: read-only at mountPath; brick_dir is mountPath iff watch, else the values'.
        bv = values["brickVolume"]
        brick_dir = cfg.get("brick_dir")
        claim_vols = {v["name"]: v["persistentVolumeClaim"] for v in pod.get("volumes", [])
                      if "persistentVolumeClaim" in v and v["name"] != "model"}
        if bv["enabled"]:
            vol = next((n for n, p in claim_vols.items() if p.get("claimName") == bv["existingClaim"]), None)
            c.check(vol is not None and claim_vols[vol].get("readOnly") is True,
                    f"the brick claim {bv['existingClaim']} is a read-only volume ({claim_vols})")
            m = mounts.get(vol) if vol else None
            c.check(m is not None and m["mountPath"] == bv["mountPath"] and m.get("readOnly") is True,
                    f"the brick claim is mounted read-only at {bv['mountPath']} ({m})")
        else:
            c.check(not claim_vols, f"brickVolume off: no brick claim mounted ({claim_vols})")
        want_dir = (bv["mountPath"] if bv["enabled"] and bv["watch"] else
                    values["config"]["serverConfig"].get("brick_dir") or None)
        c.check(brick_dir == want_dir, f"brick_dir = {brick_dir!r} (want {want_dir!r}: brickVolume.mountPath "
                "with brickVolume.watch, else config.serverConfig.brick_dir)")
        if msg is not None:
            c.check(msg.brick_dir == (want_dir or ""), "ServerConfig.brick_dir parsed by protobuf")

    def check_notes(self):
        """NOTES.txt renders (helm template skips it): a copy of the chart includes it in a manifest."""
        c = self.c
        copy_dir = self.tmp / "chart-with-notes"
        shutil.copytree(self.chart, copy_dir)
        chart_name = yaml.safe_load((Path(self.chart) / "Chart.yaml").read_text())["name"]
        (copy_dir / "templates/zz-notes-test.yaml").write_text(
            'kind: RenderedNotes\ntext: {{ include "%s/templates/NOTES.txt" . | toJson }}\n' % chart_name)
        for name in ("default", "hpa", "image", "bricks"):
            try:
                docs = self.template(self.values_file(name, VARIANTS[name]), chart=str(copy_dir))
            except AssertionError as e:
                c.check(False, f"NOTES.txt renders for {name}: {e}")
                continue
            notes = next((d["text"] for d in docs if d["kind"] == "RenderedNotes"), "")
            port = deep_merge(self.defaults, VARIANTS[name])["service"]["grpcPort"]
            c.check(f"{RELEASE}-brickserve.{NAMESPACE}.svc:{port}" in notes and "rollout status" in notes,
                    f"NOTES.txt for {name} names the Service address and how to wait for the rollout")
            values = deep_merge(self.defaults, VARIANTS[name])
            secret = values["bricksAdmin"]["existingSecret"]
            if secret:
                c.check(f"Secret {secret}" in notes and "WARNING" not in notes,
                        f"NOTES.txt for {name} says the Bricks admin calls need the token of Secret {secret}")
            else:
                c.check("WARNING: the Bricks admin service" in notes,
                        f"NOTES.txt for {name} warns that the Bricks admin service has no token")
            names = [b["name"] for b in values["bricks"]]
            c.check(all(n in notes for n in names) and (not names or "CrashLoopBackOff" in notes),
                    f"NOTES.txt for {name} lists the start-up bricks {names} and what a failing one does")

    def check_refusals(self):
        """helm template refuses every MUST_FAIL entry; helm lint the schema's (lint only logs a guard's
        `fail` as [INFO], so guards are for template, install and upgrade)."""
        c = self.c
        for what, args, needle in MUST_FAIL:
            r = self.helm_run("template", RELEASE, self.chart, "--namespace", NAMESPACE, *args)
            err = r.stderr.strip()
            c.check(r.returncode != 0 and needle in err,
                    f"{what} ({' '.join(args)}) fails naming {needle!r}" +
                    ("" if r.returncode != 0 and needle in err else f"; got rc {r.returncode}: {err[:400]}"))
            if what.startswith("schema:") and "brick" in what.lower() + " ".join(args):
                r = self.helm_run("lint", "--strict", self.chart, "--namespace", NAMESPACE, *args)
                out = (r.stdout + r.stderr).strip()
                c.check(r.returncode != 0 and needle in out, f"  and helm lint --strict refuses it too" +
                        ("" if r.returncode != 0 and needle in out else f"; got rc {r.returncode}: {out[:400]}"))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--chart", required=True, help="chart directory (helm/brickserve)")
    ap.add_argument("--helm", help="helm binary (default: tools/helm/bin/helm, helm on PATH, scripts/install_helm.sh)")
    args = ap.parse_args()
    chart = str(Path(args.chart).resolve())
    if not (Path(chart) / "Chart.yaml").exists():
        print(f"no Chart.yaml in {chart}", file=sys.stderr)
        return 1
    helm = find_helm(args.helm)
    if helm is None:
        print("SKIP: no helm (not in tools/helm/bin or on PATH, and scripts/install_helm.sh could not install it)")
        return SKIP
    with tempfile.TemporaryDirectory(prefix="helm-chart-test-") as tmp:
        return ChartTest(helm, chart, tmp).run()


if __name__ == "__main__":
    sys.exit(main())
