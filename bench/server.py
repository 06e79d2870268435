"""`make bench-server`: our entrypoint's configuration vs plain `mlflow server` defaults, on one PostgreSQL.

The servers run in turn (never at once: 2 cores) against their own database on the same real
PostgreSQL, on 127.0.0.1. For each: time to /health, log_batch throughput (100 metrics per call),
log_metric latency p50 with one client thread and p50/p99 with 8, the server's CPU time per
log_metric, resident memory of the whole process tree after the load (RSS sum, and PSS where the
kernel reports it) and the size of the Python environment. Then the ratios against the targets of
the server-image issue. Every loop is bounded in count and in time.

Shared machines drift several-fold within minutes, so every configuration is measured in each of
--rounds rounds, the configurations alternating, and each figure is the median over the rounds.
Stock runs twice: with its defaults (4 workers, job runner on), and with one worker and the job
runner off, the configuration without uvicorn's delayed-ACK stall and without background work: its
one-thread latency is what MLflow's own request path costs on this machine, the floor no
configuration of the image goes under.

    .venv/bin/python bench/server.py [--threads 8] [--seconds 15] [--rounds 2] [--no-auth]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "hack"))

import requests  # noqa: E402

from testservices._util import free_port, process_tree, stop  # noqa: E402
from testservices.mlflowproc import base_env, run_entrypoint  # noqa: E402
from testservices.postgres import Postgres  # noqa: E402
from testservices.venvs import client_venv, du, server_venv  # noqa: E402

TARGETS = {
    "throughput": 1.5,  # log_batch/s >= 1.5x stock
    "p50_ms": 10.0,  # log_metric p50 <= 10 ms with 2+ workers
    "rss": 1 / 3,  # RSS after load <= 1/3 of stock
    "health": 1 / 2,  # time to /health <= 1/2 of stock
    "env_mb": 400,  # environment size
}


@dataclass
class Result:
    name: str
    workers: int
    health_s: float = 0.0
    batch_per_s: float = 0.0
    batch_calls: int = 0
    p50_ms: float = 0.0
    p99_ms: float = 0.0
    p50_1t_ms: float = 0.0
    cpu_ms: float = 0.0  # server CPU time (all its processes) per log_metric, 8-thread phase
    metric_calls: int = 0
    rss_mb: float = 0.0
    pss_mb: float | None = None
    procs: int = 0
    env_mb: float = 0.0
    errors: list = field(default_factory=list)


def memory(pid: int) -> tuple[float, float | None, int]:
    rss = pss = 0
    have_pss = True
    pids = process_tree(pid)
    for p in pids:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss += int(line.split()[1])
        except OSError:
            continue
        try:
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Pss:"):
                    pss += int(line.split()[1])
        except OSError:
            have_pss = False
    return rss / 1024, (pss / 1024 if have_pss else None), len(pids)


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU time of the processes, from /proc/<pid>/stat."""
    total = 0
    for p in pids:
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            continue
    return total / os.sysconf("SC_CLK_TCK")


def wait_health(url: str, proc: subprocess.Popen, timeout: float = 300) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            if requests.get(url + "/health", timeout=2).status_code == 200:
                return time.monotonic() - t0
        except requests.RequestException:
            pass
        time.sleep(0.05)
    raise RuntimeError("no /health within the bound")


def run_threads(n: int, seconds: float, max_calls: int, fn) -> tuple[list[float], int, float, list[str]]:
    """n threads call fn(session) until max_calls in total or `seconds` pass; returns latencies (s)."""
    lock = threading.Lock()
    lat: list[float] = []
    errors: list[str] = []
    count = [0]
    deadline = time.monotonic() + seconds

    def worker():
        s = requests.Session()
        while time.monotonic() < deadline:
            with lock:
                if count[0] >= max_calls:
                    return
                count[0] += 1
            t = time.perf_counter()
            try:
                r = fn(s)
                ok = r.status_code == 200
            except requests.RequestException as e:
                ok, r = False, e
            dt = time.perf_counter() - t
            with lock:
                if ok:
                    lat.append(dt)
                elif len(errors) < 5:
                    errors.append(str(getattr(r, "text", r))[:200])

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(seconds + 60)
    return lat, count[0], time.monotonic() - t0, errors


def load(url: str, res: Result, threads: int, seconds: float, server_pid: int, auth=None) -> None:
    s = requests.Session()
    s.auth = auth
    exp = s.post(url + "/api/2.0/mlflow/experiments/create", json={"name": "bench-" + uuid.uuid4().hex[:8]}, timeout=30)
    exp.raise_for_status()
    run_ids = []
    for _ in range(threads):
        r = s.post(url + "/api/2.0/mlflow/runs/create", json={"experiment_id": exp.json()["experiment_id"]}, timeout=30)
        r.raise_for_status()
        run_ids.append(r.json()["run"]["info"]["run_id"])
    step = iter(range(10**9))

    def batch(sess):
        sess.auth = auth
        i = next(step)
        return sess.post(url + "/api/2.0/mlflow/runs/log-batch", timeout=30, json={
            "run_id": run_ids[i % threads],
            "metrics": [{"key": f"m{k}", "value": float(i), "timestamp": 1_700_000_000_000 + i, "step": i}
                        for k in range(100)],
        })

    def metric(sess):
        sess.auth = auth
        i = next(step)
        return sess.post(url + "/api/2.0/mlflow/runs/log-metric", timeout=30, json={
            "run_id": run_ids[i % threads], "key": "loss", "value": float(i),
            "timestamp": 1_700_000_000_000 + i, "step": i,
        })

    run_threads(threads, 5, 4 * threads, metric)  # warm-up: every worker has its connections
    lat, calls, elapsed, errors = run_threads(threads, seconds, 2000, batch)
    res.batch_calls, res.batch_per_s = len(lat), len(lat) / elapsed
    res.errors += errors
    # one client thread: the per-request latency without queueing (a delayed-ACK stall shows as ~40 ms)
    lat, calls, elapsed, errors = run_threads(1, seconds / 2, 500, metric)
    res.errors += errors
    if lat:
        res.p50_1t_ms = statistics.median(lat) * 1000
    pids = process_tree(server_pid)
    cpu0 = cpu_seconds(pids)
    lat, calls, elapsed, errors = run_threads(threads, seconds, 4000, metric)
    res.cpu_ms = (cpu_seconds(pids) - cpu0) / max(calls, 1) * 1000
    res.metric_calls = len(lat)
    res.errors += errors
    if lat:
        lat.sort()
        res.p50_ms = statistics.median(lat) * 1000
        res.p99_ms = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000


def measure(name: str, cmd: list[str], env: dict, cwd: Path, port: int, workers: int, env_mb: float,
            threads: int, seconds: float, log: Path, auth=None) -> Result:
    res = Result(name, workers, env_mb=env_mb)
    url = f"http://127.0.0.1:{port}"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(cmd, env=env, cwd=cwd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        res.health_s = wait_health(url, proc)
        load(url, res, threads, seconds, proc.pid, auth)
        time.sleep(1)
        res.rss_mb, res.pss_mb, res.procs = memory(proc.pid)
    except Exception as e:
        res.errors.append(f"{type(e).__name__}: {e}; log {log}")
    finally:
        stop(proc, timeout=30)
    return res


STOCK, STOCK_1W, OURS, OURS_AUTH = "stock `mlflow server`", "stock, 1 worker, no jobs", "mlflow-entrypoint serve", "  + basic-auth"
OURS_NO_SHORTCUT = "  - API shortcut off"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=15, help="bound of each load phase")
    ap.add_argument("--rounds", type=int, default=2, help="measurements of each configuration, alternating")
    ap.add_argument("--no-auth", action="store_true", help="skip the basic-auth configuration")
    ap.add_argument("--only", choices=["ours"], help="only our configurations (A/B of the API shortcut); no ratios")
    args = ap.parse_args()

    print("preparing: server venv, client venv (stock mlflow), PostgreSQL ...", flush=True)
    sv, cv = server_venv(), client_venv()
    ours_mb, stock_mb = du(sv.site_packages) / 1e6, du(cv.site_packages) / 1e6
    pg = Postgres().start()
    work = Path(tempfile.mkdtemp(prefix="mlflow-op-bench-"))
    names = ([] if args.only else [STOCK, STOCK_1W]) + [OURS, OURS_NO_SHORTCUT] + ([] if args.no_auth else [OURS_AUTH])
    rounds: dict[str, list[Result]] = {n: [] for n in names}
    try:
        for r in range(1, args.rounds + 1):
            for name in names:
                print(f"round {r}/{args.rounds}: {name.strip()} ...", flush=True)
                if name in (STOCK, STOCK_1W):
                    res = measure_stock(name, pg, cv, work, stock_mb, args, floor=name == STOCK_1W)
                else:
                    res = measure_ours(name, pg, sv, work, ours_mb, args, auth=name == OURS_AUTH,
                                       shortcut=name != OURS_NO_SHORTCUT)
                rounds[name].append(res)
    finally:
        pg.stop()

    results = [median_of(rs) for rs in rounds.values()]
    report(results, rounds, args)
    return 0 if not any(r.errors for r in results) else 1


def measure_stock(name: str, pg: Postgres, cv, work: Path, env_mb: float, args, floor: bool) -> Result:
    """`mlflow server` of the full mlflow install: its defaults, or (floor) one worker, no job runner."""
    db = pg.create_database()
    port = free_port()
    workers = 1 if floor else 4
    env = {**base_env(cv, work), "MLFLOW_DISABLE_TELEMETRY": "true"}
    if floor:
        env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    cwd = work / f"stock-{port}"
    cwd.mkdir()
    cmd = [str(cv.bin("mlflow")), "server", "--backend-store-uri", db.replace("postgresql://", "postgresql+psycopg2://"),
           "--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)]
    return measure(name, cmd, env, cwd, port, workers, env_mb, args.threads, args.seconds, work / f"stock-{port}.log")


def measure_ours(name: str, pg: Postgres, sv, work: Path, env_mb: float, args, auth: bool, shortcut: bool) -> Result:
    """mlflow-entrypoint serve with its defaults (or without its API shortcut), on a database
    migrated by `migrate`."""
    db = pg.create_database()
    port = free_port()
    env = {"MLFLOW_OPERATOR_BACKEND_STORE_URI": db, "MLFLOW_OPERATOR_ARTIFACTS_DESTINATION": str(work / "artifacts")}
    if not shortcut:
        env["MLFLOW_OPERATOR_ASGI_SHORTCUT"] = "false"
    credentials = None
    if auth:
        user, pw = "admin", "bench-" + uuid.uuid4().hex
        env.update({"MLFLOW_OPERATOR_AUTH": "basic", "MLFLOW_OPERATOR_AUTH_DATABASE_URI": pg.create_database(),
                    "MLFLOW_OPERATOR_ADMIN_USERNAME": user, "MLFLOW_OPERATOR_ADMIN_PASSWORD": pw,
                    "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex})
        credentials = (user, pw)
    mig = run_entrypoint(sv, "migrate", env, work / f"mig-{port}")  # not counted in time to /health
    if mig.returncode != 0:
        return Result(name, 2, errors=[f"migrate failed: {mig.stdout[-500:]} {mig.stderr[-500:]}"])
    scratch = work / f"scratch-{port}"
    scratch.mkdir()
    full = {**base_env(sv, work), "MLFLOW_OPERATOR_HOST": "127.0.0.1", "MLFLOW_OPERATOR_PORT": str(port),
            "MLFLOW_OPERATOR_SCRATCH_DIR": str(scratch), **env}
    return measure(name, [str(sv.bin("mlflow-entrypoint")), "serve"], full, work, port, 2, env_mb,
                   args.threads, args.seconds, work / f"ours-{port}.log", credentials)


def median_of(results: list[Result]) -> Result:
    """One Result whose figures are the medians over the rounds (errors: all of them)."""
    first = results[0]
    out = Result(first.name, first.workers, env_mb=first.env_mb)
    for f in ("health_s", "batch_per_s", "batch_calls", "p50_ms", "p99_ms", "p50_1t_ms", "cpu_ms",
              "metric_calls", "rss_mb", "procs"):
        values = [getattr(r, f) for r in results if not r.errors and getattr(r, f)]
        setattr(out, f, statistics.median(values) if values else 0.0)
    pss = [r.pss_mb for r in results if not r.errors and r.pss_mb]
    out.pss_mb = statistics.median(pss) if pss else None
    out.errors = [e for r in results for e in r.errors]
    return out


def cpu_calibration_ms() -> float:
    """Milliseconds for a fixed pure-Python loop (best of 5): how fast this machine runs Python now.
    Latency targets in milliseconds only compare across runs whose calibration is alike; on shared
    machines it varies several-fold from hour to hour."""
    import timeit

    return min(timeit.repeat("sum(range(1000))", number=2000, repeat=5)) * 1000


def report(results: list[Result], rounds: dict[str, list[Result]], args) -> None:
    print()
    load1 = os.getloadavg()[0]
    print(f"MLflow server benchmark: PostgreSQL 15 on 127.0.0.1, {args.threads} client threads, "
          f"each phase bounded to {args.seconds:g}s, medians of {args.rounds} alternating rounds, "
          f"{os.cpu_count()} cores, load average {load1:.1f}, "
          f"CPU calibration {cpu_calibration_ms():.0f} ms (2000 x sum(range(1000)); a fast idle core: about 15-20)")
    print("columns: p50 1thr = log_metric p50 with one client thread; metric p50/p99 = with all threads; "
          "CPU/req = server CPU ms per log_metric; batch/s = log_batch calls of 100 metrics per second")
    hdr = f"{'configuration':<26}{'workers':>8}{'/health s':>10}{'batch/s':>9}{'p50 1thr':>9}{'metric p50':>11}{'p99 ms':>8}" \
          f"{'CPU/req':>8}{'RSS MB':>8}{'PSS MB':>8}{'procs':>6}{'env MB':>8}"
    print(hdr)
    print("-" * len(hdr))
    for r in results:
        pss = f"{r.pss_mb:.0f}" if r.pss_mb is not None else "n/a"
        print(f"{r.name:<26}{r.workers:>8}{r.health_s:>10.1f}{r.batch_per_s:>9.1f}{r.p50_1t_ms:>9.1f}{r.p50_ms:>11.1f}{r.p99_ms:>8.1f}"
              f"{r.cpu_ms:>8.1f}{r.rss_mb:>8.0f}{pss:>8}{r.procs:>6.0f}{r.env_mb:>8.0f}")
    print("per round (p50 1thr / metric p50 ms): " + "; ".join(
        f"{name.strip()}: " + ", ".join(f"{r.p50_1t_ms:.0f}/{r.p50_ms:.0f}" for r in rs) for name, rs in rounds.items()))
    for r in results:
        for e in r.errors:
            print(f"  ! {r.name}: {e}")
    by_name = {r.name: r for r in results}
    ours, off = by_name[OURS], by_name[OURS_NO_SHORTCUT]
    if ours.cpu_ms and off.cpu_ms:
        print(f"API shortcut (mlflow_entrypoint.asgi): on / off = CPU per log_metric {ours.cpu_ms:.1f} / {off.cpu_ms:.1f} ms, "
              f"p50 1 thread {ours.p50_1t_ms:.1f} / {off.p50_1t_ms:.1f} ms, p50 / p99 {args.threads} threads "
              f"{ours.p50_ms:.0f} / {off.p50_ms:.0f} ms and {ours.p99_ms:.0f} / {off.p99_ms:.0f} ms, "
              f"log_batch {ours.batch_per_s:.1f} / {off.batch_per_s:.1f} per s")
    if STOCK not in by_name:
        return
    stock, floor = by_name[STOCK], by_name[STOCK_1W]
    if not (stock.batch_per_s and ours.batch_per_s and stock.rss_mb and stock.health_s):
        return
    print()
    print("ratios (ours / stock defaults) against the targets")
    rows = [
        ("log_batch throughput", f"{ours.batch_per_s / stock.batch_per_s:.2f}x", f">= {TARGETS['throughput']}x",
         ours.batch_per_s / stock.batch_per_s >= TARGETS["throughput"]),
        ("log_metric p50, 1 thread", f"{ours.p50_1t_ms:.1f} ms (stock {stock.p50_1t_ms:.1f})", f"<= {TARGETS['p50_ms']:g} ms",
         ours.p50_1t_ms <= TARGETS["p50_ms"]),
        # The p50 target cites stock's 52 ms: the one-thread figure, the delayed-ACK stall. With
        # all threads at once the p50 is bound by CPU per request (the lower bound row below).
        (f"log_metric p50, {args.threads} threads", f"{ours.p50_ms:.1f} ms (stock {stock.p50_ms:.1f})", "(info)", None),
        (f"log_metric p99, {args.threads} threads", f"{ours.p99_ms:.1f} ms (stock {stock.p99_ms:.1f})", "<= stock",
         ours.p99_ms <= stock.p99_ms),
        ("RSS after load", f"{ours.rss_mb / stock.rss_mb:.2f}", f"<= {TARGETS['rss']:.2f}", ours.rss_mb / stock.rss_mb <= TARGETS["rss"]),
        ("time to /health", f"{ours.health_s / stock.health_s:.2f}", f"<= {TARGETS['health']:.2f}",
         ours.health_s / stock.health_s <= TARGETS["health"]),
        ("environment size", f"{ours.env_mb:.0f} MB (stock {stock.env_mb:.0f})", f"< {TARGETS['env_mb']} MB",
         ours.env_mb < TARGETS["env_mb"]),
    ]
    if ours.pss_mb and stock.pss_mb:
        rows.insert(5, ("PSS after load", f"{ours.pss_mb / stock.pss_mb:.2f}", "(info)", None))
    if OURS_AUTH in by_name and by_name[OURS_AUTH].p50_1t_ms:
        a = by_name[OURS_AUTH]
        rows.append(("basic-auth p50, 1 thread", f"{a.p50_1t_ms:.1f} ms", f"<= {TARGETS['p50_ms']:g} ms",
                     a.p50_1t_ms <= TARGETS["p50_ms"]))
    if floor.p50_1t_ms:
        # The one-worker stock server without job runner has no delayed-ACK stall and no background
        # work: its latency is MLflow's own request path on this CPU. Ours at about 1.0x of it means
        # nothing the image configures adds to that path.
        rows.append(("p50 1 thread vs stock floor", f"{ours.p50_1t_ms / floor.p50_1t_ms:.2f}x "
                     f"({floor.p50_1t_ms:.1f} ms)", "(floor)", None))
    if ours.cpu_ms:
        # With every core busy, p50 cannot go under threads x CPU per request / cores.
        bound = args.threads * ours.cpu_ms / (os.cpu_count() or 1)
        rows.append((f"p50 lower bound, {args.threads} threads", f"{bound:.0f} ms ({ours.cpu_ms:.1f} ms CPU/req)",
                     "(info)", None))
    for name, value, target, ok in rows:
        verdict = "" if ok is None else ("met" if ok else "NOT met")
        print(f"  {name:<32}{value:<32}{target:<12}{verdict}")


if __name__ == "__main__":
    sys.exit(main())
