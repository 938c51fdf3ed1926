"""`brickserve serve` as a child process for the Python end-to-end tests."""
import os
import select
import subprocess
import time


def start_server(binary, args, timeout_s=120):
    """Starts `brickserve serve ARGS`; returns (process, addresses) once it prints
    "brickserve: listening on ADDR". addresses maps "listening" (gRPC) and, with --metrics-listen,
    "metrics" to HOST:PORT."""
    proc = subprocess.Popen([binary, "serve"] + args, stdout=subprocess.PIPE)
    deadline = time.monotonic() + timeout_s
    out = b""
    while b"brickserve: listening on " not in out.rpartition(b"\n")[0]:
        if time.monotonic() >= deadline:
            proc.kill()
            proc.wait()
            raise RuntimeError("brickserve serve did not print its address within %d s" % timeout_s)
        ready, _, _ = select.select([proc.stdout], [], [], 1.0)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 1024)
            if not chunk:
                raise RuntimeError("brickserve serve exited with %s before listening" % proc.wait())
            out += chunk
    addresses = {}
    for line in out.decode().splitlines():
        for what in ("listening", "metrics"):
            prefix = "brickserve: %s on " % what
            if line.startswith(prefix):
                addresses[what] = line[len(prefix):]
    return proc, addresses


def stop_server(proc):
    """SIGTERM, then SIGKILL after 20 s; returns the exit code."""
    proc.terminate()
    try:
        return proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()
