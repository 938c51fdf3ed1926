#!/usr/bin/python3
"""A real Prometheus server (Debian's `prometheus`) scrapes a real `brickserve serve` on loopback
while the brickserve CLI sends a few generations; the Prometheus HTTP API must then show the
target up and the counters moved (calls by code, generated tokens, the TTFT histogram's count).

Run by ctest (prometheus_scrape_e2e); exit code 77 means skipped (no model, no prometheus). By hand:
  /usr/bin/python3 tests/e2e/prometheus_scrape_test.py --binary build/server/brickserve \
      --model-dir ../shared/models/brick-tiny
"""
import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

from serve_process import start_server, stop_server

SKIP = 77


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def query(prom, expr):
    """The value of an instant query with one result, or None."""
    url = "http://%s/api/v1/query?%s" % (prom, urllib.parse.urlencode({"query": expr}))
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
    except OSError:
        return None
    result = body.get("data", {}).get("result", [])
    return float(result[0]["value"][1]) if len(result) == 1 else None


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--binary", required=True)
    p.add_argument("--model-dir", required=True)
    a = p.parse_args()
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        print("SKIP: no prometheus binary (Debian package prometheus)")
        return SKIP
    if not os.path.exists(os.path.join(a.model_dir, "config.json")):
        print("SKIP: brick-tiny not found at %s" % a.model_dir)
        return SKIP

    work = tempfile.mkdtemp(prefix="brickserve-prom-")
    server, addresses = start_server(a.binary, ["--model", a.model_dir, "--listen", "127.0.0.1:0",
                                                "--metrics-listen", "127.0.0.1:0"])
    grpc_address, metrics_address = addresses["listening"], addresses["metrics"]
    prom_proc = None
    try:
        with open(os.path.join(work, "prometheus.yml"), "w") as f:
            f.write("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
                    "scrape_configs:\n  - job_name: brickserve\n    static_configs:\n"
                    "      - targets: ['%s']\n" % metrics_address)
        prom = "127.0.0.1:%d" % free_port()
        prom_proc = subprocess.Popen([prometheus, "--config.file", os.path.join(work, "prometheus.yml"),
                                      "--storage.tsdb.path", os.path.join(work, "data"),
                                      "--web.listen-address", prom, "--log.level", "warn"],
                                     stdout=subprocess.DEVNULL, stderr=open(os.path.join(work, "prom.log"), "w"))
        for _ in range(3):
            subprocess.run([a.binary, "generate", "--server", grpc_address, "--prompt", "The kernel uses a",
                            "--max-new-tokens", "8", "--ignore-eos"], check=True, stdout=subprocess.DEVNULL,
                           timeout=60)
        want = {
            'up{job="brickserve"}': 1,
            'sum(brickserve_grpc_requests_total{code="OK",method="/brickserve.v1.InferenceService/GenerateStream"})': 3,
            "brickserve_generation_tokens_total": 24,
            "brickserve_time_to_first_token_seconds_count": 3,
        }
        got = {}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            got = {expr: query(prom, expr) for expr in want}
            if all(got[e] is not None and got[e] >= v for e, v in want.items()):
                print("OK: Prometheus sees %s" % got)
                return 0
            if prom_proc.poll() is not None:
                break
            time.sleep(1)
        print("FAIL: wanted at least %s, Prometheus answered %s" % (want, got))
        with open(os.path.join(work, "prom.log")) as f:
            print("prometheus log:\n" + f.read()[-3000:])
        return 1
    finally:
        if prom_proc is not None:
            stop_server(prom_proc)  # any process: SIGTERM, then SIGKILL
        code = stop_server(server)
        shutil.rmtree(work, ignore_errors=True)
        if code != 0:
            print("brickserve exited with %d" % code)


if __name__ == "__main__":
    sys.exit(main())
