#!/usr/bin/env python3
"""Benchmark shim's ``params`` delivery against calling the function directly and against nginx.

One run measures, with wrk, requests per second and latency (p50, p99) at each concurrency (default 1
and 32) of three targets in front of the same upstream "function" (bench/upstream.py):

  direct  wrk -> function
  nginx   wrk -> nginx (Debian's, keep-alive upstream pool, 1 worker) -> function
  shim    wrk -> ``shim run`` (params delivery, warm cache, 2 bound secrets) -> function

and prints a table, the added latency of each proxy (proxied p50/p99 - direct p50/p99) and the ratios
the issue asks for. See bench/README.md for the method.

Usage: python bench/run.py [--quick] [--duration S] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import os
import platform
import re
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
LUA = BENCH_DIR / "wrk_request.lua"
UPSTREAM = BENCH_DIR / "upstream.py"

OFWATCHDOG_SHARE_OF_NGINX = 0.2  # the issue: nginx does ~5x of-watchdog's rps on this machine
SHIM_HEALTH_TIMEOUT = 10.0

# CPU placement (see --pin): the load generator on one set of CPUs, the function and the proxy in front
# of it on the others. None: let the scheduler decide.
LOAD_CPUS: set[int] | None = None
SERVER_CPUS: set[int] | None = None


def _affinity(cpus: set[int] | None):
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def plan_cpus(pin: str) -> tuple[set[int] | None, set[int] | None, str]:
    """``auto``: wrk on the first allowed CPU, servers on the others (needs 2+); ``none``; or ``L:S`` lists."""
    allowed = sorted(os.sched_getaffinity(0))
    if pin == "none":
        return None, None, "not pinned (scheduler decides)"
    if pin == "auto":
        if len(allowed) < 2:
            return None, None, "not pinned (fewer than 2 CPUs)"
        load, server = {allowed[0]}, set(allowed[1:])
    else:
        left, _, right = pin.partition(":")
        load = {int(x) for x in left.split(",") if x}
        server = {int(x) for x in right.split(",") if x}
        if not load or not server:
            raise SystemExit("--pin takes auto, none or LOADCPUS:SERVERCPUS such as 0:1")
    desc = (f"wrk on CPU {','.join(map(str, sorted(load)))}; function and proxy on CPU "
            f"{','.join(map(str, sorted(server)))}")
    return load, server, desc


# ------------------------------------------------------------------------------------------------
# small helpers
# ------------------------------------------------------------------------------------------------
def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def cpu_busy(seconds: float = 1.0) -> float | None:
    """Share of all CPUs busy over ``seconds`` (from /proc/stat), or None where unavailable."""
    def sample() -> tuple[int, int]:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle
    try:
        t0, i0 = sample()
        time.sleep(seconds)
        t1, i1 = sample()
    except (OSError, ValueError, IndexError):
        return None
    return 1.0 - (i1 - i0) / max(1, t1 - t0)


CLK_TCK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _machine_busy_ticks() -> int:
    """CPU time spent running anything (user, nice, system, irq, softirq), all CPUs, in clock ticks."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    return v[0] + v[1] + v[2] + v[5] + v[6]


def _process_tree(roots: list[int]) -> set[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry))
    seen: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in seen:
            seen.add(pid)
            todo.extend(children.get(pid, []))
    return seen


def _tree_ticks(pids: set[int]) -> int:
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime (all threads)
        except (OSError, ValueError, IndexError):
            pass
    return total


class CpuWatch:
    """CPU used during a window: by each of the bench's servers (process trees), by wrk, and by processes
    that are not part of the bench at all (other users of the box).

    Machine busy time (/proc/stat) minus the servers minus wrk (from the reaped-children rusage) is
    ``other_cpu``, as a share of one CPU; a few percent is accounting noise."""

    def __init__(self, roots: dict[str, int]):
        self.roots = roots

    def __enter__(self) -> "CpuWatch":
        self.trees = {name: _process_tree([pid]) for name, pid in self.roots.items()}
        self.t0 = time.monotonic()
        self.busy0 = _machine_busy_ticks()
        self.ticks0 = {name: _tree_ticks(pids) for name, pids in self.trees.items()}
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.kids0 = ru.ru_utime + ru.ru_stime
        return self

    def __exit__(self, *exc) -> None:
        busy = (_machine_busy_ticks() - self.busy0) / CLK_TCK
        self.seconds = {name: (_tree_ticks(pids) - self.ticks0[name]) / CLK_TCK for name, pids in self.trees.items()}
        ours = sum(self.seconds.values())
        ru = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.seconds["wrk"] = ru.ru_utime + ru.ru_stime - self.kids0
        wall = max(1e-6, time.monotonic() - self.t0)
        self.bench_cpu = (ours + self.seconds["wrk"]) / wall
        self.other_cpu = max(0.0, busy - ours - self.seconds["wrk"]) / wall


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_request(port: int, method: str, path: str, body: bytes | None = None,
                 headers: dict[str, str] | None = None, timeout: float = 2.0) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def wait_http(port: int, path: str, timeout: float, proc: "Child | None" = None) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.popen.poll() is not None:
            return False
        try:
            status, _ = http_request(port, "GET", path, timeout=1.0)
            if status == 200:
                return True
        except OSError:
            pass
        time.sleep(0.05)
    return False


class Child:
    """A child process in its own session, its output in a log file, stopped by its pid."""

    def __init__(self, name: str, argv: list[str], logdir: Path, env: dict[str, str] | None = None):
        self.name = name
        self.logpath = logdir / f"{name}.log"
        self._log = open(self.logpath, "wb")
        self.popen = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                      stdin=subprocess.DEVNULL, start_new_session=True,
                                      preexec_fn=_affinity(SERVER_CPUS))

    def tail(self, n: int = 20) -> str:
        try:
            lines = self.logpath.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join("    " + line for line in lines[-n:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


# ------------------------------------------------------------------------------------------------
# the targets
# ------------------------------------------------------------------------------------------------
def start_upstream(tmp: Path) -> tuple[Child, int]:
    port = free_port()
    child = Child("upstream", [sys.executable, str(UPSTREAM), "--port", str(port)], tmp)
    if not wait_http(port, "/__stats", 10, child):
        raise SystemExit(f"the bench upstream did not start:\n{child.tail()}")
    return child, port


def upstream_stats(port: int) -> dict:
    status, body = http_request(port, "GET", "/__stats")
    if status != 200:
        raise RuntimeError(f"upstream /__stats answered {status}")
    return json.loads(body)


NGINX_CONF = """\
# generated by bench/run.py
daemon off;
master_process on;
worker_processes {workers};
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;

events {{
    worker_connections 4096;
    multi_accept on;
}}

http {{
    access_log off;
    client_body_temp_path {tmp}/nginx-client-body;
    proxy_temp_path {tmp}/nginx-proxy;
    fastcgi_temp_path {tmp}/nginx-fastcgi;
    uwsgi_temp_path {tmp}/nginx-uwsgi;
    scgi_temp_path {tmp}/nginx-scgi;

    keepalive_timeout 65s;
    keepalive_requests 1000000;

    upstream function {{
        server 127.0.0.1:{upstream_port};
        keepalive 128;
        keepalive_requests 1000000;
        keepalive_timeout 60s;
    }}

    server {{
        listen 127.0.0.1:{port} backlog=4096;
        location / {{
            proxy_pass http://function;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }}
    }}
}}
"""


def start_nginx(tmp: Path, upstream_port: int, workers: int) -> tuple[Child | None, int, str]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        return None, 0, "nginx is not installed (run bench/setup.sh)"
    port = free_port()
    ntmp = tmp / "nginx"
    ntmp.mkdir()
    conf = ntmp / "nginx.conf"
    conf.write_text(NGINX_CONF.format(workers=workers, tmp=ntmp, upstream_port=upstream_port, port=port))
    child = Child("nginx", [nginx, "-p", str(ntmp), "-c", str(conf), "-e", str(ntmp / "nginx-error.log")], tmp)
    if not wait_http(port, "/", 10, child):
        tail = child.tail()
        child.stop()
        return None, 0, f"nginx did not start:\n{tail}"
    return child, port, "ok"


def shim_command(explicit: str | None) -> list[str] | None:
    if explicit:
        return [explicit]
    candidate = REPO / ".venv" / "bin" / "shim"
    if candidate.exists():
        return [str(candidate)]
    found = shutil.which("shim")
    return [found] if found else None


SECRETS = {
    # two secrets bound to the function, a few keys each
    "bench-db": {"username": "app", "password": "s3cret-" + "p" * 24, "host": "db.internal", "port": "5432"},
    "bench-api": {"token": "tok_" + "t" * 40, "region": "eu-west-1", "endpoint": "https://api.example.test"},
}
FUNCTION = "bench-fn"


def setup_shim_store(shim: list[str], tmp: Path) -> tuple[dict[str, str], Path]:
    """Create a store with one function and two bound secrets through the shim CLI."""
    store = tmp / "store.db"
    key_path = tmp / "function-key.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("SHIM_")}
    env["SHIM_STORE"] = f"embedded:{store}"
    admin = dict(env, SHIM_MASTER_KEY=base64.b64encode(os.urandom(32)).decode())
    steps = [[*shim, "secret", "create", name, *(f"{k}={v}" for k, v in data.items())]
             for name, data in SECRETS.items()]
    steps.append([*shim, "function", "create", FUNCTION, "--key-out", str(key_path)])
    steps += [[*shim, "bind", name, FUNCTION] for name in SECRETS]
    for argv in steps:
        res = subprocess.run(argv, env=admin, capture_output=True, text=True, timeout=60)
        if res.returncode != 0:
            shown = " ".join(argv[1:4]) + " ..."
            raise RuntimeError(f"`shim {shown}` failed ({res.returncode}): {(res.stderr or res.stdout).strip()}")
    if not key_path.exists():
        raise RuntimeError(f"`shim function create --key-out {key_path}` wrote no key")
    return env, key_path


def start_shim(shim: list[str], tmp: Path, upstream_port: int, env: dict[str, str],
               key_path: Path, cache_ttl: str | None) -> tuple[Child, int]:
    port = free_port()
    run_env = dict(env)  # the sidecar gets the function's key, never the master key
    run_env.update({
        "SHIM_FUNCTION": FUNCTION,
        "SHIM_FUNCTION_KEY": str(key_path),
        "SHIM_INJECT": "params",
        "SHIM_HOST": "127.0.0.1",
        "mode": "http",
        # shutdown only: on SIGTERM, report unhealthy for 0 s (not the default 30 s) before draining
        "healthcheck_interval": "0",
        "upstream_url": f"http://127.0.0.1:{upstream_port}",
        "port": str(port),
    })
    if cache_ttl is not None:
        run_env["SHIM_CACHE_TTL"] = cache_ttl
    for name in ("fprocess", "function_process"):
        run_env.pop(name, None)
    child = Child("shim", [*shim, "run"], tmp, env=run_env)
    if not wait_http(port, "/_/health", SHIM_HEALTH_TIMEOUT, child):
        tail = child.tail()
        child.stop()
        raise RuntimeError(f"`shim run` did not become healthy within {SHIM_HEALTH_TIMEOUT:.0f} s:\n{tail}")
    return child, port


def start_of_watchdog(binary: str, tmp: Path, upstream_port: int) -> tuple[Child, int]:
    """of-watchdog in http mode in front of the same function: the issue's reference, measured in the same
    run. The binary is the user's (built from openfaas/of-watchdog); shim neither ships nor builds it.
    Its metrics port is fixed at 8081 by of-watchdog itself."""
    port = free_port()
    wtmp = tmp / "of-watchdog"
    wtmp.mkdir()
    env = {"PATH": os.environ.get("PATH", ""), "TMPDIR": str(wtmp), "mode": "http",
           "upstream_url": f"http://127.0.0.1:{upstream_port}", "port": str(port),
           "fprocess": "sleep 1000000", "healthcheck_interval": "0"}
    child = Child("of-watchdog", [binary], tmp, env=env)
    if not wait_http(port, "/_/health", SHIM_HEALTH_TIMEOUT, child):
        tail = child.tail()
        child.stop()
        raise RuntimeError(f"of-watchdog did not become healthy:\n{tail}")
    return child, port


def verify_injection(shim_port: int, upstream_port: int) -> dict:
    """Warm the cache and prove that requests through shim reach the function with the secrets block."""
    before = upstream_stats(upstream_port)
    body = b'{"input":"warm-up"}'
    for _ in range(20):
        status, _ = http_request(shim_port, "POST", "/", body=body,
                                 headers={"Content-Type": "application/json"}, timeout=5)
        if status != 200:
            raise RuntimeError(f"a request through shim answered {status}")
    # a caller's own Shim-* header must not reach the function as if it were shim's
    status, _ = http_request(shim_port, "POST", "/", body=body, headers={"Shim-Secrets": "3"}, timeout=5)
    after = upstream_stats(upstream_port)
    sent = 21
    got = after["with_secrets"] - before["with_secrets"]
    block = after.get("last_block") or {}
    problems = []
    if after["requests"] - before["requests"] != sent:
        problems.append(f"the function got {after['requests'] - before['requests']} requests, expected {sent}")
    if got != sent:
        problems.append(f"only {got} of {sent} requests carried a Shim-Secrets block")
    if after["bad_blocks"] != before["bad_blocks"]:
        problems.append("some Shim-Secrets lengths did not fit the body")
    if block.get("v") != 1:
        problems.append(f"block version is {block.get('v')!r}, expected 1 ({block.get('error', '')})")
    names = set(block.get("secrets") or {}) | set(block.get("binary") or {})
    if names != set(SECRETS):
        problems.append(f"block carries secrets {sorted(names)}, expected {sorted(SECRETS)}")
    if problems:
        raise RuntimeError("secrets were not injected as expected: " + "; ".join(problems))
    return block


# ------------------------------------------------------------------------------------------------
# load generation
# ------------------------------------------------------------------------------------------------
_UNIT_US = {"us": 1.0, "ms": 1000.0, "s": 1_000_000.0}


def _text_us(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(text)
    return float(m.group(1)) * _UNIT_US[m.group(2)]


def parse_wrk(out: str) -> dict:
    """wrk's result: the exact BENCH_RESULT line of the Lua script, else wrk's --latency text."""
    for line in out.splitlines():
        if line.startswith("BENCH_RESULT "):
            raw = json.loads(line[len("BENCH_RESULT "):])
            lat = raw["latency_us"]
            non2xx = 0
            m = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
            if m:
                non2xx = int(m.group(1))
            errors = sum(raw["errors"].values())
            return {
                "requests": raw["requests"],
                "rps": raw["requests"] / (raw["duration_us"] / 1e6),
                "p50_us": float(lat["p50"]), "p90_us": float(lat["p90"]),
                "p99_us": float(lat["p99"]), "p99_9_us": float(lat["p99_9"]),
                "mean_us": lat["mean"], "max_us": float(lat["max"]),
                "errors": errors, "non2xx": non2xx, "source": "lua",
            }
    # fallback: wrk's human-readable output
    rps = float(re.search(r"Requests/sec:\s*([\d.]+)", out).group(1))
    pct = {m.group(1): _text_us(m.group(2)) for m in re.finditer(r"^\s*(\d+)%\s+([\d.]+(?:us|ms|s))\s*$", out, re.M)}
    req = int(re.search(r"(\d+) requests in", out).group(1))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", out)
    return {
        "requests": req, "rps": rps, "p50_us": pct["50"], "p90_us": pct.get("90"), "p99_us": pct["99"],
        "p99_9_us": None, "mean_us": None, "max_us": None,
        "errors": sum(int(x) for x in sock.groups()) if sock else 0,
        "non2xx": int(non2xx.group(1)) if non2xx else 0, "source": "text",
    }


def run_wrk(port: int, concurrency: int, seconds: float, threads: int, method: str, body_size: int) -> dict:
    threads = max(1, min(threads, concurrency))
    argv = ["wrk", "-t", str(threads), "-c", str(concurrency), "-d", f"{max(1, round(seconds))}s", "--latency",
            "--timeout", "5s", "-s", str(LUA), f"http://127.0.0.1:{port}/"]
    env = dict(os.environ, BENCH_METHOD=method, BENCH_BODY_SIZE=str(body_size))
    res = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60,
                         preexec_fn=_affinity(LOAD_CPUS))
    if res.returncode != 0:
        raise RuntimeError(f"wrk failed ({res.returncode}): {res.stderr.strip() or res.stdout.strip()}")
    return parse_wrk(res.stdout)


@dataclass
class Point:
    target: str
    concurrency: int
    method: str
    runs: list[dict] = field(default_factory=list)

    def med(self, key: str) -> float | None:
        vals = [r[key] for r in self.runs if r.get(key) is not None]
        return statistics.median(vals) if vals else None

    def total(self, key: str) -> int:
        return sum(r.get(key) or 0 for r in self.runs)


def wait_idle(limit: float) -> None:
    """Wait up to ``limit`` seconds for the machine to be idle (< 10% busy over 1 s) before a point."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        busy = cpu_busy(1.0)
        if busy is None or busy < 0.10:
            return
    log(f"  (machine still busy after {limit:g} s of waiting; measuring anyway)")


def measure(point: Point, port: int, upstream_port: int, args, roots: dict[str, int]) -> None:
    if args.wait_idle > 0:
        wait_idle(args.wait_idle)
    if args.warmup > 0:
        run_wrk(port, point.concurrency, args.warmup, args.threads, point.method, args.body_size)
    time.sleep(0.2)
    before = upstream_stats(upstream_port)
    with CpuWatch(roots) as cpu:
        result = run_wrk(port, point.concurrency, args.duration, args.threads, point.method, args.body_size)
    result["bench_cpu"] = round(cpu.bench_cpu, 3)
    result["other_cpu"] = round(cpu.other_cpu, 3)
    # CPU time per request of the process serving the target (the proxy, or the function for direct)
    # and of the function behind it
    n = max(1, result["requests"])
    server = "upstream" if point.target == "direct" else point.target
    result["server_cpu_us_per_req"] = round(cpu.seconds.get(server, 0.0) / n * 1e6, 2)
    result["function_cpu_us_per_req"] = round(cpu.seconds.get("upstream", 0.0) / n * 1e6, 2)
    time.sleep(0.2)
    after = upstream_stats(upstream_port)
    result["upstream_requests"] = after["requests"] - before["requests"]
    result["upstream_with_secrets"] = after["with_secrets"] - before["with_secrets"]
    result["upstream_bad_blocks"] = after["bad_blocks"] - before["bad_blocks"]
    point.runs.append(result)
    log(f"  {point.target:<6} c={point.concurrency:<3} {point.method:<4} {result['rps']:>10.0f} rps  "
        f"p50 {result['p50_us']:>7.0f} us  p99 {result['p99_us']:>7.0f} us  "
        f"cpu/req {result['server_cpu_us_per_req']:.1f} us  others {result['other_cpu']:.0%}"
        + (f"  errors {result['errors'] + result['non2xx']}" if result["errors"] + result["non2xx"] else ""))


# ------------------------------------------------------------------------------------------------
# report
# ------------------------------------------------------------------------------------------------
def fmt(v: float | None, spec: str = ".0f", suffix: str = "") -> str:
    return "n/a" if v is None else f"{v:{spec}}{suffix}"


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b <= 0:
        return None
    return a / b


def report(points: dict[tuple[str, int, str], Point], targets: list[str], concs: list[int],
           methods: list[str], args, notes: list[str]) -> dict:
    out: dict = {"points": [], "ratios": {}, "issue_bar": {}}
    print()
    print(f"shim params delivery benchmark: {args.duration:g} s per point after {args.warmup:g} s warm-up, "
          f"wrk {args.threads} thread(s), body {args.body_size} B, median of {args.repeat} run(s), "
          f"nginx {args.nginx_workers} worker(s), shim cache TTL {args.cache_ttl or 'default'}")
    print(f"CPU placement: {args.pin_desc}")
    for method in methods:
        print()
        hdr = (f"{'method':<6} {'target':<11} {'c':>3} {'rps':>10} {'p50 us':>8} {'p99 us':>8} "
               f"{'+p50 us':>8} {'+p99 us':>8} {'cpu/req':>7} {'errors':>6} {'secrets':>8} {'others':>7}")
        print(hdr)
        print("-" * len(hdr))
        for c in concs:
            direct = points.get(("direct", c, method))
            for t in targets:
                p = points.get((t, c, method))
                if p is None or not p.runs:
                    continue
                add50 = add99 = None
                if t != "direct" and direct and direct.runs:
                    add50 = p.med("p50_us") - direct.med("p50_us")
                    add99 = p.med("p99_us") - direct.med("p99_us")
                up = p.total("upstream_requests")
                inj = p.total("upstream_with_secrets")
                secrets = f"{100.0 * inj / up:.0f}%" if up else "n/a"
                other_vals = [r["other_cpu"] for r in p.runs if r.get("other_cpu") is not None]
                others = f"{max(other_vals):.0%}" if other_vals else "n/a"
                print(f"{method:<6} {t:<11} {c:>3} {p.med('rps'):>10.0f} {p.med('p50_us'):>8.0f} "
                      f"{p.med('p99_us'):>8.0f} {fmt(add50, '+.0f'):>8} {fmt(add99, '+.0f'):>8} "
                      f"{fmt(p.med('server_cpu_us_per_req'), '.1f'):>7} "
                      f"{p.total('errors') + p.total('non2xx'):>6} {secrets:>8} {others:>7}")
                out["points"].append({
                    "target": t, "concurrency": c, "method": method,
                    "rps": p.med("rps"), "p50_us": p.med("p50_us"), "p90_us": p.med("p90_us"),
                    "p99_us": p.med("p99_us"), "p99_9_us": p.med("p99_9_us"),
                    "added_p50_us": add50, "added_p99_us": add99,
                    "server_cpu_us_per_req": p.med("server_cpu_us_per_req"),
                    "function_cpu_us_per_req": p.med("function_cpu_us_per_req"),
                    "errors": p.total("errors"), "non2xx": p.total("non2xx"),
                    "upstream_requests": up, "upstream_with_secrets": inj,
                    "other_cpu_max": max(other_vals) if other_vals else None, "runs": p.runs,
                })
    print("  (+p50/+p99: added latency = proxied - direct; secrets: share of requests that reached the "
          "function with a Shim-Secrets block;\n   cpu/req: CPU time per request, in us, of the proxy (of the function for direct);\n"
          "   others: CPU used by processes outside the bench during the "
          "measurement, worst run, in % of one CPU: above ~10% that point is disturbed)")

    main_method = methods[0]

    def get(t: str, c: int, key: str) -> float | None:
        p = points.get((t, c, main_method))
        return p.med(key) if p and p.runs else None

    print()
    print(f"Ratios ({main_method}; added = proxied - direct, in us):")
    hdr = (f"  {'c':>3} {'shim/direct rps':>15} {'shim/nginx rps':>14}   {'shim +p50':>9} {'nginx +p50':>10} "
           f"{'shim/nginx':>10}   {'shim +p99':>9} {'nginx +p99':>10} {'shim/nginx':>10}")
    print(hdr)
    for c in concs:
        r: dict = {}
        s_rps, d_rps, n_rps = get("shim", c, "rps"), get("direct", c, "rps"), get("nginx", c, "rps")
        r["shim_over_direct_rps"] = ratio(s_rps, d_rps)
        r["shim_over_nginx_rps"] = ratio(s_rps, n_rps)
        line = (f"  {c:>3} {fmt(r['shim_over_direct_rps'], '.2f'):>15} {fmt(r['shim_over_nginx_rps'], '.2f'):>14}")
        for q in ("p50", "p99"):
            d = get("direct", c, f"{q}_us")
            s = get("shim", c, f"{q}_us")
            n = get("nginx", c, f"{q}_us")
            s_add = None if s is None or d is None else s - d
            n_add = None if n is None or d is None else n - d
            r[f"shim_added_{q}_us"] = s_add
            r[f"nginx_added_{q}_us"] = n_add
            both_positive = s_add is not None and n_add is not None and s_add > 0 and n_add > 0
            r[f"shim_over_nginx_added_{q}"] = ratio(s_add, n_add) if both_positive else None
            line += (f"   {fmt(s_add, '+.0f'):>9} {fmt(n_add, '+.0f'):>10} "
                     f"{fmt(r[f'shim_over_nginx_added_{q}'], '.2f', 'x'):>10}")
        out["ratios"][f"c{c}"] = r
        print(line)

    print()
    print("Issue bar:")
    hi = max(concs)
    bar = ratio(get("shim", hi, "rps"), get("nginx", hi, "rps"))
    verdict = "n/a" if bar is None else ("PASS" if bar > OFWATCHDOG_SHARE_OF_NGINX else "FAIL")
    print(f"  shim/nginx rps at c={hi}: {fmt(bar, '.2f')}   target > ~{OFWATCHDOG_SHARE_OF_NGINX} "
          f"(estimate of of-watchdog: nginx does ~5x of-watchdog's rps on this machine) -> {verdict}")
    lo = min(concs)
    s_add50 = out["ratios"].get(f"c{lo}", {}).get("shim_added_p50_us")
    s_add99 = out["ratios"].get(f"c{lo}", {}).get("shim_added_p99_us")
    n_add50 = out["ratios"].get(f"c{lo}", {}).get("nginx_added_p50_us")
    n_add99 = out["ratios"].get(f"c{lo}", {}).get("nginx_added_p99_us")
    print(f"  added latency at c={lo}: shim {fmt(s_add50, '+.0f')} us p50 / {fmt(s_add99, '+.0f')} us p99; "
          f"nginx {fmt(n_add50, '+.0f')} / {fmt(n_add99, '+.0f')} us  (target: less than of-watchdog's; "
          "measured below only with --of-watchdog)")
    if any(get("of-watchdog", c, "rps") for c in concs):
        print("  measured against of-watchdog in this run:")
        for c in concs:
            w_rps, s_rps, d50 = get("of-watchdog", c, "rps"), get("shim", c, "rps"), get("direct", c, "p50_us")
            w50, s50 = get("of-watchdog", c, "p50_us"), get("shim", c, "p50_us")
            w_add = None if w50 is None or d50 is None else w50 - d50
            s_add = None if s50 is None or d50 is None else s50 - d50
            out["ratios"].setdefault(f"c{c}", {}).update(
                shim_over_of_watchdog_rps=ratio(s_rps, w_rps), of_watchdog_added_p50_us=w_add)
            print(f"    c={c}: shim/of-watchdog rps {fmt(ratio(s_rps, w_rps), '.2f')}  "
                  f"added p50: shim {fmt(s_add, '+.0f')} us, of-watchdog {fmt(w_add, '+.0f')} us")
    out["issue_bar"] = {
        "shim_over_nginx_rps_at_max_c": bar, "max_c": hi, "target": OFWATCHDOG_SHARE_OF_NGINX,
        "verdict": verdict, "shim_added_p50_us_at_min_c": s_add50, "shim_added_p99_us_at_min_c": s_add99,
    }
    for n in notes:
        print(f"  note: {n}")
    return out


# ------------------------------------------------------------------------------------------------
def main() -> int:
    ap = argparse.ArgumentParser(description="Benchmark shim's params delivery against direct calls and nginx.")
    ap.add_argument("--quick", action="store_true", help="3 s per point, 1 s warm-up")
    ap.add_argument("--duration", type=float, default=None, help="seconds measured per point (default 10)")
    ap.add_argument("--warmup", type=float, default=None, help="seconds of warm-up per point (default 2)")
    ap.add_argument("--concurrency", default="1,32", help="comma-separated connection counts (default 1,32)")
    ap.add_argument("--repeat", type=int, default=1, help="runs per point, interleaved; the median is shown")
    ap.add_argument("--threads", type=int, default=1, help="wrk threads (default 1: 2 cores are shared "
                    "by wrk, the proxy and the function)")
    ap.add_argument("--body-size", type=int, default=64, help="POST body size in bytes (default 64)")
    ap.add_argument("--get", action="store_true", help="also measure GET (no body)")
    ap.add_argument("--nginx-workers", type=int, default=1, help="nginx worker processes (default 1, as shim)")
    ap.add_argument("--no-shim", action="store_true", help="measure direct and nginx only")
    ap.add_argument("--no-nginx", action="store_true", help="skip nginx")
    ap.add_argument("--of-watchdog", default=None, metavar="PATH",
                    help="also measure an of-watchdog binary (http mode) in front of the same function")
    ap.add_argument("--shim", default=None, help="path of the shim executable (default .venv/bin/shim)")
    ap.add_argument("--cache-ttl", default=None, metavar="DURATION",
                    help="SHIM_CACHE_TTL for shim run (default: shim's own default)")
    ap.add_argument("--require-shim", action="store_true", help="fail if shim cannot be measured")
    ap.add_argument("--pin", default="auto", metavar="auto|none|L:S",
                    help="CPU placement: auto (default) puts wrk on the first CPU and the function and proxy "
                    "on the others; none lets the scheduler decide; L:S gives CPU lists, e.g. 0:1")
    ap.add_argument("--wait-idle", type=float, default=0, metavar="S",
                    help="before each point, wait up to S seconds for the machine to be idle (shared boxes)")
    ap.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (logs, configs)")
    args = ap.parse_args()
    if args.duration is None:
        args.duration = 3.0 if args.quick else 10.0
    if args.warmup is None:
        args.warmup = 1.0 if args.quick else 2.0
    # wrk takes whole seconds
    args.duration = max(1, round(args.duration))
    args.warmup = max(0, round(args.warmup))
    concs = [int(c) for c in args.concurrency.split(",") if c.strip()]
    methods = ["POST"] + (["GET"] if args.get else [])

    global LOAD_CPUS, SERVER_CPUS
    LOAD_CPUS, SERVER_CPUS, args.pin_desc = plan_cpus(args.pin)
    log(f"CPU placement: {args.pin_desc}")
    busy = cpu_busy()
    notes: list[str] = []
    if busy is not None and busy > 0.10:
        msg = (f"the machine was {busy:.0%} busy before the bench started (other processes): "
               "figures will be noisy")
        log(f"WARNING: {msg}")
        notes.append(msg)

    if shutil.which("wrk") is None:
        log("wrk is not installed: run bench/setup.sh first")
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="shim-bench-"))
    os.chmod(tmp, 0o755)  # nginx workers run as nobody when started by root
    children: list[Child] = []
    targets: dict[str, int] = {}
    injected_block: dict | None = None
    try:
        upstream, up_port = start_upstream(tmp)
        children.append(upstream)
        targets["direct"] = up_port
        log(f"upstream (function) on 127.0.0.1:{up_port}: {upstream.tail(1).strip()}")

        if not args.no_nginx:
            nginx, ng_port, why = start_nginx(tmp, up_port, args.nginx_workers)
            if nginx is None:
                log(f"nginx skipped: {why}")
                notes.append(f"nginx not measured: {why.splitlines()[0]}")
            else:
                children.append(nginx)
                targets["nginx"] = ng_port
                log(f"nginx on 127.0.0.1:{ng_port} ({args.nginx_workers} worker(s), keep-alive upstream pool)")

        if args.of_watchdog:
            try:
                watchdog, wd_port = start_of_watchdog(args.of_watchdog, tmp, up_port)
                children.append(watchdog)
                targets["of-watchdog"] = wd_port
                log(f"of-watchdog on 127.0.0.1:{wd_port}")
            except (RuntimeError, OSError) as exc:
                log(f"of-watchdog NOT measured: {exc}")
                notes.append(f"of-watchdog not measured: {str(exc).splitlines()[0]}")

        if not args.no_shim:
            shim = shim_command(args.shim)
            why = None
            if shim is None:
                why = "no shim executable (pip install -e . in .venv)"
            else:
                try:
                    env, key_path = setup_shim_store(shim, tmp)
                    log(f"store {env['SHIM_STORE']}: function {FUNCTION}, secrets {', '.join(SECRETS)} bound")
                    child, sh_port = start_shim(shim, tmp, up_port, env, key_path, args.cache_ttl)
                    try:
                        injected_block = verify_injection(sh_port, up_port)
                    except BaseException:
                        child.stop()
                        raise
                    children.append(child)
                    targets["shim"] = sh_port
                    log(f"shim run on 127.0.0.1:{sh_port}: healthy, cache warm, secrets injected "
                        f"(block {injected_block.get('length')} B, secrets "
                        f"{', '.join(sorted(injected_block.get('secrets') or {}))})")
                except (RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
                    why = str(exc)
            if why:
                log(f"shim NOT measured: {why}")
                notes.append(f"shim not measured: {why.splitlines()[0]}")
                if args.require_shim:
                    return 1

        order = [t for t in ("direct", "nginx", "of-watchdog", "shim") if t in targets]
        points: dict[tuple[str, int, str], Point] = {}
        total = len(order) * len(concs) * len(methods) * args.repeat
        log(f"measuring {total} point(s) of {args.warmup:g}+{args.duration:g} s: "
            f"~{total * (args.warmup + args.duration + 0.5):.0f} s")
        for method in methods:
            for c in concs:
                for _ in range(args.repeat):
                    for t in order:
                        p = points.setdefault((t, c, method), Point(t, c, method))
                        measure(p, targets[t], up_port, args, {ch.name: ch.popen.pid for ch in children})

        for ch in children:
            if ch.popen.poll() is not None:
                notes.append(f"{ch.name} exited during the run (code {ch.popen.returncode})")

        busy_after = cpu_busy()  # only our idle children are left running now
        if busy_after is not None and busy_after > 0.10:
            msg = f"the machine was {busy_after:.0%} busy right after the bench (other processes): figures may be noisy"
            log(f"WARNING: {msg}")
            notes.append(msg)

        result = report(points, order, concs, methods, args, notes)
        if args.json:
            result["config"] = {
                "duration_s": args.duration, "warmup_s": args.warmup, "concurrency": concs,
                "repeat": args.repeat, "wrk_threads": args.threads, "body_size": args.body_size,
                "nginx_workers": args.nginx_workers, "methods": methods, "shim_cache_ttl": args.cache_ttl,
                "cpu_placement": args.pin_desc,
            }
            result["machine"] = {
                "cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform(),
                "nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
                if "nginx" in targets else None,
                "wrk": (subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout or "").split("\n")[0],
            }
            result["injected_block"] = injected_block
            result["notes"] = notes
            Path(args.json).parent.mkdir(parents=True, exist_ok=True)
            Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
            log(f"wrote {args.json}")
        return 0
    finally:
        for ch in reversed(children):
            ch.stop()
        if args.keep:
            log(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
