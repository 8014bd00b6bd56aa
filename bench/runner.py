"""Orchestrator: start the servers, run the load generator(s), measure, print the tables.

Every (repeat, N, stack) run gets fresh processes: an echo upstream, the serving process
(nothing more for ``direct``: the echo serves the clients) and one or more load-generator
processes. Server CPU comes from /proc/<pid>/stat over the steady window (after a warm-up),
memory from /proc/<pid>/status (VmHWM after the run minus VmRSS before it).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import queue
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import procfs

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
BIN = Path(PY).parent
# uvicorn: what production runs (voiceplatform.serve's default); daphne: the supported
# alternative. X+rec: the same with an agent that records (both sides to the recording writer).
STACKS = ("direct", "bare", "uvicorn", "uvicorn+rec", "daphne", "daphne+rec")
DEFAULT_STACKS = ("direct", "bare", "uvicorn", "daphne")
PLATFORM_STACKS = ("uvicorn", "uvicorn+rec", "daphne", "daphne+rec")
# other% (CPU of processes outside the run, % of one core) above this in any run: not quiet.
QUIET_OTHER_PCT = 10.0
RECORDING_P50_BUDGET_MS = 1.0
MODEL = "gpt-realtime-2"
P99_BUDGET_MS = 20.0


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_port(port: int, proc: Proc, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.popen.poll() is not None:
            raise RuntimeError(f"{proc.name} exited ({proc.popen.returncode}): {proc.tail()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{proc.name} did not listen on {port} within {timeout:.0f}s: {proc.tail()}")


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def tail(self, chars: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:].strip()
        except OSError:
            return ""

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(5)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)


def start(name: str, argv: list[str], logdir: Path, env: dict | None = None, **kw) -> Proc:
    log_path = logdir / f"{name}.log"
    handle = open(log_path, "wb")
    popen = subprocess.Popen(
        argv,
        cwd=ROOT,
        env=env,
        stdout=kw.pop("stdout", handle),
        stderr=handle,
        **kw,
    )
    handle.close()
    return Proc(name, popen, log_path)


# --------------------------------------------------------------------------- platform setup


class Platform:
    """A throwaway data dir with a migrated SQLite database, a tenant, an agent and a key."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="vp-bench-"))
        self.agent = ""
        self.recording_agent = ""
        self.key = ""

    def env(self, echo_port: int = 9) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
        env.pop("VP_MODE", None)
        env.update(
            VP_DATA_DIR=str(self.dir),
            OPENAI_API_KEY="sk-bench-0000000000000000000000",
            VP_OPENAI_REALTIME_URL=f"ws://127.0.0.1:{echo_port}/v1/realtime",
            VP_LOG_LEVEL="WARNING",
            DEBUG="0",  # as in production (embedded mode defaults it on)
            DJANGO_SETTINGS_MODULE="voiceplatform.settings",
            PYTHONUNBUFFERED="1",
        )
        return env

    def prepare(self) -> None:
        env = self.env()
        done = subprocess.run(
            [PY, "manage.py", "migrate", "--noinput"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if done.returncode:
            raise RuntimeError(f"migrate failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
        done = subprocess.run(
            [PY, "-m", "bench.platform_setup"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        lines = [line for line in done.stdout.splitlines() if line.startswith("SETUP ")]
        if done.returncode or not lines:
            raise RuntimeError(
                f"platform setup failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
            )
        info = json.loads(lines[-1][6:])
        self.agent, self.key = info["agent"], info["key"]
        self.recording_agent = info["recording_agent"]

    def cleanup(self) -> None:
        shutil.rmtree(self.dir, ignore_errors=True)


# The serving options production runs (voiceplatform.serve's defaults), for the other benchmarks.
PRODUCTION = argparse.Namespace(
    uvicorn_ws="relay", uvicorn_loop="uvloop", daphne_loop="uvloop", daphne_log_args="plain"
)


def loop_of(stack: str, cfg) -> str:
    """The event loop a stack runs on (named in every row)."""
    if stack in ("direct", "bare"):
        return "asyncio"
    return cfg.daphne_loop if stack.startswith("daphne") else cfg.uvicorn_loop


def server_argv(stack: str, port: int, echo_port: int, cfg) -> list[str]:
    if stack == "bare":
        return [
            PY,
            "-m",
            "bench.bare",
            "--port",
            str(port),
            "--upstream",
            f"ws://127.0.0.1:{echo_port}",
        ]
    if stack in PLATFORM_STACKS:
        # What production runs (voiceplatform.serve), the event loop pinned per stack.
        server = "daphne" if stack.startswith("daphne") else "uvicorn"
        argv = [PY, "-m", "voiceplatform.serve", "--server", server, "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--no-access-log", "--loop", loop_of(stack, cfg)]
        if server == "uvicorn":
            argv += ["--ws", cfg.uvicorn_ws]
        else:
            argv += ["--autobahn-log-args", cfg.daphne_log_args]
        return argv
    raise ValueError(stack)


# --------------------------------------------------------------------------- one run


class ClientProc:
    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.lines: queue.Queue[str | None] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.popen.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def expect(self, prefix: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"{self.proc.name}: no {prefix} within {timeout:.0f}s")
            try:
                line = self.lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                raise RuntimeError(f"{self.proc.name} exited: {self.proc.tail()}")
            if line.startswith(prefix + " "):
                return json.loads(line[len(prefix) + 1 :])


def percentile(values: list, q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def sleep_until(epoch: float) -> None:
    while (remaining := epoch - time.time()) > 0:
        time.sleep(min(remaining, 0.5))


def warm_up(url: str, bearer: str, plain: bool, frames: int = 10) -> None:
    from websockets.sync.client import connect

    headers = {"Authorization": f"Bearer {bearer}"} if bearer else {}
    audio = "A" * 1280
    with connect(url, additional_headers=headers, compression=None, open_timeout=30) as ws:
        seen: list[str] = []

        def next_event() -> dict:
            try:
                event = json.loads(ws.recv(timeout=30))
            except Exception as exc:
                raise RuntimeError(
                    f"warm-up session: {type(exc).__name__}: {exc} (events so far: {seen})"
                ) from exc
            seen.append(str(event.get("type")))
            if event.get("type") == "error":
                raise RuntimeError(f"warm-up session: error event {json.dumps(event)[:400]}")
            return event

        next_event()  # session.created (the platform's carries the configured session)
        if plain:
            ws.send(json.dumps({"type": "session.update", "session": {"type": "realtime"}}))
            while next_event().get("type") != "session.updated":
                if len(seen) > 20:
                    raise RuntimeError(f"warm-up session: no session.updated in {seen}")
        for _ in range(frames):
            ws.send('{"type":"input_audio_buffer.append","audio":"' + audio + '"}')
            time.sleep(0.02)
        deltas = 0
        while deltas < frames:
            if next_event().get("type") == "response.output_audio.delta":
                deltas += 1


def run_once(stack: str, n: int, cfg, platform: Platform | None, logdir: Path) -> dict:
    procs: list[Proc] = []
    clients: list[ClientProc] = []
    try:
        echo_port = free_port()
        echo = start("echo", [PY, "-m", "bench.echo", "--port", str(echo_port)], logdir)
        procs.append(echo)
        bearer = ""
        plain = True
        if stack == "direct":
            server, port = echo, echo_port
            url = f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}"
        else:
            port = free_port()
            env = platform.env(echo_port) if stack in PLATFORM_STACKS else None
            server = start(stack, server_argv(stack, port, echo_port, cfg), logdir, env)
            procs.append(server)
            url = f"ws://127.0.0.1:{port}/v1/realtime?model={MODEL}"
            if stack in PLATFORM_STACKS:
                agent = platform.recording_agent if stack.endswith("+rec") else platform.agent
                url += f"&agent={agent}"
                bearer = platform.key
                plain = False
        wait_port(echo_port, echo)
        wait_port(port, server)
        client_flags = ["--send-session-update"] if plain else []
        # One short session first, so that lazy imports, database connections and caches are
        # not charged to the sessions measured.
        warm_up(url, bearer, plain)
        time.sleep(0.2)
        procfs.reset_peak_rss(server.pid)
        rss_before = procfs.memory_kib(server.pid)["VmRSS"]

        nclients = cfg.clients or max(1, math.ceil(n / cfg.sessions_per_client))
        shares = [n // nclients + (1 if i < n % nclients else 0) for i in range(nclients)]
        first = 0
        for i, share in enumerate(shares):
            argv = [
                PY,
                "-m",
                "bench.client",
                "--url",
                url,
                "--sessions",
                str(share),
                "--first-index",
                str(first),
                "--total-sessions",
                str(n),
                "--seconds",
                str(cfg.seconds),
                "--warmup",
                str(cfg.warmup),
                "--drain",
                str(cfg.drain),
                *client_flags,
            ]
            if bearer:
                argv += ["--bearer", bearer]
            proc = start(
                f"client{i}",
                argv,
                logdir,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                bufsize=1,
            )
            procs.append(proc)
            clients.append(ClientProc(proc))
            first += share
        connect_t0 = time.monotonic()
        ready = [c.expect("READY", 60 + n * 0.1) for c in clients]
        connect_s = time.monotonic() - connect_t0
        rss_connected = procfs.memory_kib(server.pid)["VmRSS"]

        start_at = time.time() + 0.3
        for c in clients:
            c.proc.popen.stdin.write(f"GO {start_at!r}\n")
            c.proc.popen.stdin.flush()
        sleep_until(start_at + cfg.warmup)
        profiler = None
        if cfg.profile and stack != "direct":
            out = (
                Path(cfg.profile)
                / f"{stack}-n{n}-r{len(list(Path(cfg.profile).glob(f'{stack}-n{n}-*')))}.txt"
            )
            profiler = subprocess.Popen(
                [
                    str(BIN / "py-spy"),
                    "record",
                    "--nonblocking",
                    "--format",
                    "raw",
                    "-r",
                    "200",
                    "-d",
                    str(max(1, int(cfg.seconds - cfg.warmup - 0.5))),
                    "-o",
                    str(out),
                    "-p",
                    str(server.pid),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        t_a = time.time()
        cpu_a = procfs.cpu_seconds(server.pid)
        echo_a = procfs.cpu_seconds(echo.pid)
        clients_a = sum(procfs.cpu_seconds(c.proc.pid) for c in clients)
        busy_a, total_a = procfs.machine_ticks()
        sleep_until(start_at + cfg.seconds)
        t_b = time.time()
        cpu_b = procfs.cpu_seconds(server.pid)
        echo_b = procfs.cpu_seconds(echo.pid)
        clients_b = sum(procfs.cpu_seconds(c.proc.pid) for c in clients)
        busy_b, total_b = procfs.machine_ticks()
        results = [c.expect("RESULT", cfg.drain + 60) for c in clients]
        if profiler is not None:
            profiler.wait(30)
        mem = procfs.memory_kib(server.pid)
    except Exception as exc:
        tails = {p.name: p.tail() for p in procs}
        return {
            "stack": stack,
            "n": n,
            "loop": loop_of(stack, cfg),
            "failed": f"{type(exc).__name__}: {exc}",
            "logs": tails,
        }
    finally:
        for c in clients:
            try:
                c.proc.popen.stdin.close()
            except OSError:
                pass
        for p in reversed(procs):
            p.stop()
    server_log = server.tail() if stack != "direct" else ""

    rtts = [v for r in results for v in r["rtts_us"]]
    window_sent = sum(r["window_sent"] for r in results)
    # Frames whose echo came back within the window: what the relay actually moved then (equal
    # to the frames sent in the window while it keeps up; fewer when it falls behind).
    window_received = sum(r["window_received"] for r in results)
    window = t_b - t_a
    server_cpu = cpu_b - cpu_a
    events: dict[str, int] = {}
    for r in results:
        for kind, count in r["events"].items():
            events[kind] = events.get(kind, 0) + count
    return {
        "stack": stack,
        "n": n,
        "loop": loop_of(stack, cfg),
        "clients": nclients,
        "connected": sum(r["connected"] for r in ready),
        "connect_failed": sum(r["failed"] for r in ready),
        "connect_failures": [f for r in ready for f in r["failures"]][:5],
        "connect_s": connect_s,
        "sent": sum(r["sent"] for r in results),
        "delivered": sum(r["delivered"] for r in results),
        "mismatched": sum(r["mismatched"] for r in results),
        "duplicates": sum(r["duplicates"] for r in results),
        "window_sent": window_sent,
        "rtt_p50_ms": percentile(rtts, 0.50) / 1000,
        "rtt_p99_ms": percentile(rtts, 0.99) / 1000,
        "rtt_max_ms": (max(rtts) / 1000) if rtts else float("nan"),
        "window_received": window_received,
        "cpu_us_per_frame": server_cpu / window_received * 1e6 if window_received else float("nan"),
        "server_cpu_pct": server_cpu / window * 100,
        "echo_cpu_us_per_frame": (
            (echo_b - echo_a) / window_received * 1e6 if window_received else float("nan")
        ),
        "machine_busy_pct": (busy_b - busy_a) / max(1, total_b - total_a) * 100,
        # CPU (% of one core) used by processes that are not this run's: interference.
        "other_cpu_pct": max(
            0.0,
            (
                (busy_b - busy_a) / procfs.CLK_TCK
                - server_cpu
                - (0 if stack == "direct" else echo_b - echo_a)
                - (clients_b - clients_a)
            )
            / window
            * 100,
        ),
        "clients_cpu_pct": (clients_b - clients_a) / window * 100,
        "rss_before_mb": rss_before / 1024,
        "rss_connected_mb": rss_connected / 1024,
        "peak_rss_mb": mem["VmHWM"] / 1024,
        "mem_mb_per_session": (mem["VmHWM"] - rss_before) / 1024 / n,
        "client_late_p99_ms": max(r["late_p99_us"] for r in results) / 1000,
        "client_late_max_ms": max(r["late_max_us"] for r in results) / 1000,
        "client_cpu_pct": max(r["cpu_s"] / r["wall_s"] * 100 for r in results),
        "events": events,
        "error_events": events.get("error", 0),
        "errors": [e for r in results for e in r["errors"]][:5],
        "closed": [c for r in results for c in r["closed"]][:5],
        "closed_count": sum(r["closed_count"] for r in results),
        "server_log_tail": server_log[-1500:],
    }


# --------------------------------------------------------------------------- summary


def med(values: list[float]) -> float:
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


@dataclass
class Row:
    stack: str
    n: int
    runs: list[dict] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    held: list[bool] = field(default_factory=list)
    added_p50: list[float] = field(default_factory=list)
    added_p99: list[float] = field(default_factory=list)
    vs_bare: list[float] = field(default_factory=list)

    def m(self, key: str) -> float:
        return med([r[key] for r in self.runs])

    def total(self, key: str) -> int:
        return sum(r[key] for r in self.runs)


def spread(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if v == v]
    return (min(values), max(values)) if values else (float("nan"), float("nan"))


def run_holds(run: dict, direct: dict | None) -> bool:
    """One run kept up: every frame delivered, no error or early close, added p99 within budget
    (against ``direct`` of the same repetition and N; absolute p99 for direct itself)."""
    if "failed" in run:
        return False
    if run["connect_failed"] or run["delivered"] != run["sent"]:
        return False
    if run["error_events"] or run["closed_count"]:
        return False
    if run["stack"] == "direct":
        return run["rtt_p99_ms"] <= P99_BUDGET_MS
    if direct is None or "failed" in direct:
        return run["rtt_p99_ms"] <= P99_BUDGET_MS
    return run["rtt_p99_ms"] - direct["rtt_p99_ms"] <= P99_BUDGET_MS


def summarize(runs: list[dict], stacks: list[str], sessions: list[int]) -> dict:
    rows: dict[tuple[str, int], Row] = {}
    for stack in stacks:
        for n in sessions:
            rows[stack, n] = Row(stack, n)
    by_run = {(r["stack"], r["n"], r.get("repeat", 0)): r for r in runs}
    for run in runs:
        row = rows[run["stack"], run["n"]]
        if "failed" in run:
            row.failed.append(run["failed"])
        else:
            row.runs.append(run)
        # Per repetition, against direct and bare of the same repetition and N: the pairs ran
        # back to back, so drift on a shared machine cancels out better than in medians.
        rep = run.get("repeat", 0)
        direct = by_run.get(("direct", run["n"], rep))
        bare = by_run.get(("bare", run["n"], rep))
        row.held.append(run_holds(run, direct))
        if "failed" in run:
            continue
        if direct is not None and "failed" not in direct and run["stack"] != "direct":
            row.added_p99.append(run["rtt_p99_ms"] - direct["rtt_p99_ms"])
            row.added_p50.append(run["rtt_p50_ms"] - direct["rtt_p50_ms"])
        if run["stack"] in PLATFORM_STACKS and bare is not None and "failed" not in bare:
            row.vs_bare.append(run["cpu_us_per_frame"] / bare["cpu_us_per_frame"])
    table = []
    for (stack, n), row in rows.items():
        loop = next((r.get("loop", "?") for r in runs if r["stack"] == stack), "?")
        if not row.runs:
            table.append({"stack": stack, "n": n, "loop": loop, "failed": row.failed})
            continue
        entry = {
            "stack": stack,
            "n": n,
            "loop": loop,
            "repeats": len(row.runs),
            "failed": row.failed,
            "held_runs": sum(row.held),
            "runs_total": len(row.held),
        }
        for key in (
            "rtt_p50_ms",
            "rtt_p99_ms",
            "rtt_max_ms",
            "cpu_us_per_frame",
            "server_cpu_pct",
            "echo_cpu_us_per_frame",
            "machine_busy_pct",
            "mem_mb_per_session",
            "peak_rss_mb",
            "rss_before_mb",
            "client_late_p99_ms",
            "client_cpu_pct",
            "connect_s",
            "other_cpu_pct",
            "clients_cpu_pct",
        ):
            entry[key] = row.m(key)
        entry["cpu_us_per_frame_range"] = spread([r["cpu_us_per_frame"] for r in row.runs])
        entry["rtt_p99_ms_range"] = spread([r["rtt_p99_ms"] for r in row.runs])
        entry["other_cpu_pct_max"] = max(r["other_cpu_pct"] for r in row.runs)
        if row.added_p99:
            entry["added_p50_ms"] = med(row.added_p50)
            entry["added_p99_ms"] = med(row.added_p99)
            entry["added_p99_ms_range"] = spread(row.added_p99)
        if row.vs_bare:
            entry["cpu_vs_bare"] = med(row.vs_bare)
            entry["cpu_vs_bare_range"] = spread(row.vs_bare)
        for key in (
            "sent",
            "delivered",
            "connect_failed",
            "error_events",
            "closed_count",
            "mismatched",
            "duplicates",
        ):
            entry[key] = row.total(key)
        entry["errors"] = [e for r in row.runs for e in r["errors"]][:3]
        entry["closed"] = [c for r in row.runs for c in r["closed"]][:3]
        entry["connect_failures"] = [c for r in row.runs for c in r["connect_failures"]][:3]
        entry["clients"] = row.runs[0]["clients"]
        table.append(entry)
    by_key = {(e["stack"], e["n"]): e for e in table}
    for e in table:
        e["holds"] = holds(e)
        e["client_bound"] = bool(
            "client_late_p99_ms" in e and (e["client_late_p99_ms"] > 10 or e["client_cpu_pct"] > 90)
        )
    capacity = {}
    capacity_every = {}
    for stack in stacks:
        passing = [n for n in sessions if by_key[stack, n]["holds"]]
        capacity[stack] = max(passing) if passing else None
        every = [
            n
            for n in sessions
            if by_key[stack, n].get("runs_total")
            and by_key[stack, n]["held_runs"] == by_key[stack, n]["runs_total"]
        ]
        capacity_every[stack] = max(every) if every else None
    others = [r["other_cpu_pct"] for r in runs if "other_cpu_pct" in r]
    return {
        "rows": table,
        "capacity": capacity,
        "capacity_every_run": capacity_every,
        "other_cpu_pct_max": max(others) if others else 0.0,
        "other_cpu_pct_median": med(others),
        "noisy_runs": sum(1 for v in others if v > QUIET_OTHER_PCT),
        "runs": len(runs),
    }


def holds(e: dict) -> bool:
    """The row (medians over the repetitions) kept up: every frame of every run delivered, no
    errors, median added p99 within budget."""
    if "rtt_p99_ms" not in e or e["failed"]:
        return False
    if e["connect_failed"] or e["delivered"] != e["sent"] or e["error_events"] or e["closed_count"]:
        return False
    if e["stack"] == "direct" or "added_p99_ms" not in e:
        return e["rtt_p99_ms"] <= P99_BUDGET_MS
    return e["added_p99_ms"] <= P99_BUDGET_MS


def fmt(value, spec: str = ".1f", width: int = 7) -> str:
    """Right-aligned, at least one leading space; big values lose their decimals to fit."""
    if value is None or (isinstance(value, float) and value != value):
        return " " + "-".rjust(width - 1)
    if abs(value) >= 1000 and spec.endswith("f"):
        spec = spec.split(".")[0] + ".0f"
    return " " + format(value, spec).rjust(width - 1)


def fmt_range(pair, spec: str = ".0f", width: int = 12) -> str:
    """[min-max] of the repetitions, right-aligned."""
    if not pair or any(v != v for v in pair):
        return " " + "".rjust(width - 1)
    low, high = (format(v, spec) for v in pair)
    return " " + f"[{low}..{high}]".rjust(width - 1)


def quiet_verdict(summary: dict) -> str:
    if summary["noisy_runs"]:
        return (
            f"NOT QUIET: in {summary['noisy_runs']} of {summary['runs']} runs other processes "
            f"used > {QUIET_OTHER_PCT:g}% of a core (max {summary['other_cpu_pct_max']:.0f}%, "
            f"median {summary['other_cpu_pct_median']:.0f}%): figures are noisy, latency and "
            "capacity understate the relays; measure again on a quiet machine"
        )
    return (
        f"quiet: other processes used <= {QUIET_OTHER_PCT:g}% of a core in every run "
        f"(max {summary['other_cpu_pct_max']:.0f}%)"
    )


def print_report(summary: dict, cfg, out=sys.stdout) -> None:
    p = lambda s="": print(s, file=out)  # noqa: E731
    p()
    p(
        f"VoicePlatform relay benchmark, {time.strftime('%Y-%m-%d %H:%M')}: {cfg.seconds:g}s per "
        f"run (first {cfg.warmup:g}s warm-up not measured), {cfg.repeat} repeat(s), medians "
        "[min..max over the repeats]; 50 frames/s/session of 960 B PCM16 (1280 b64 chars); "
        f"{os.cpu_count()} CPUs"
    )
    p(f"machine: {quiet_verdict(summary)}")
    header = (
        f"{'stack':<12}{'loop':<8}{'N':>5} {'rtt p50':>8}{'rtt p99':>8} {'+p50':>7}{'+p99':>7}"
        f"{'+p99 range':>15}  {'delivered/sent':>17} {'held':>5} {'cpu us/fr':>9}"
        f"{'range':>12}{'srv cpu%':>9} {'MB/sess':>8}{'peakMB':>8}  {'cl late99':>9}"
        f"{'cl cpu%':>8}{'other%':>7}  notes"
    )
    p(header)
    p("-" * len(header))
    last_n = None
    for e in sorted(summary["rows"], key=lambda e: (e["n"], STACKS.index(e["stack"]))):
        if last_n is not None and e["n"] != last_n:
            p()
        last_n = e["n"]
        if "rtt_p50_ms" not in e:
            p(
                f"{e['stack']:<12}{e['loop']:<8}{e['n']:>5}  FAILED: "
                f"{(e['failed'] or ['?'])[0][:150]}"
            )
            continue
        notes = []
        if e["error_events"]:
            notes.append(f"{e['error_events']} error events ({(e['errors'] or ['?'])[0][:60]})")
        if e["connect_failed"]:
            notes.append(f"{e['connect_failed']} connects failed")
        if e["closed_count"]:
            notes.append(f"{e['closed_count']} closed early")
        if e["mismatched"] or e["duplicates"]:
            notes.append(f"{e['mismatched']} mismatched, {e['duplicates']} dup")
        if e["failed"]:
            notes.append(f"{len(e['failed'])} runs failed")
        if e["client_bound"]:
            notes.append("CLIENT-BOUND?")
        if e["other_cpu_pct_max"] > QUIET_OTHER_PCT:
            notes.append(f"BUSY MACHINE (other% up to {e['other_cpu_pct_max']:.0f})")
        if e["clients"] > 1:
            notes.append(f"{e['clients']} client procs")
        ratio = f"{e['delivered']}/{e['sent']}"
        held = f"{e['held_runs']}/{e['runs_total']}"
        p(
            f"{e['stack']:<12}{e['loop']:<8}{e['n']:>5} "
            f"{fmt(e['rtt_p50_ms'], '.2f', 8)}{fmt(e['rtt_p99_ms'], '.2f', 8)} "
            f"{fmt(e.get('added_p50_ms'), '+.2f')}{fmt(e.get('added_p99_ms'), '+.2f')}"
            f"{fmt_range(e.get('added_p99_ms_range'), '+.1f', 15)}  "
            f"{ratio:>17} {held:>5} {fmt(e['cpu_us_per_frame'], '.0f', 9)}"
            f"{fmt_range(e['cpu_us_per_frame_range'])}"
            f"{fmt(e['server_cpu_pct'], '.0f', 9)} "
            f"{fmt(e['mem_mb_per_session'], '.3f', 8)}{fmt(e['peak_rss_mb'], '.0f', 8)}  "
            f"{fmt(e['client_late_p99_ms'], '.1f', 9)}{fmt(e['client_cpu_pct'], '.0f', 8)}"
            f"{fmt(e['other_cpu_pct'], '.0f', 7)}  {'; '.join(notes)}"
        )
    p()
    p(
        "loop: the event loop the serving process ran on (pinned per stack); rtt: send -> echo "
        "received, ms; +p50/+p99: minus direct's of the same repeat and N (median [range]);"
    )
    p(
        "held: repeats with 100% delivery, no errors and added p99 <= "
        f"{P99_BUDGET_MS:g} ms; cpu us/fr: CPU of the serving process per audio frame relayed"
    )
    p(
        "(one append in + one delta out, counted by echoes received in the window; "
        "direct: the echo itself; relays: the relay only);"
    )
    p("srv cpu%: serving process, % of one core; MB/sess: (VmHWM - VmRSS before the sessions)/N;")
    p(
        "cl late99: p99 lateness of the client's sends behind schedule (ms); cl cpu%: busiest "
        "client process (% of a core); other%: CPU used"
    )
    p(
        "meanwhile by processes outside the run (% of a core, from /proc/stat minus this run's "
        f"processes; > {QUIET_OTHER_PCT:g} in any repeat flags BUSY MACHINE)."
    )
    rows = {(e["stack"], e["n"]): e for e in summary["rows"]}
    ratios = [e for e in summary["rows"] if "cpu_vs_bare" in e]
    if ratios:
        p()
        p(
            "CPU per frame relative to the bare websockets relay (asyncio), per repeat against "
            "bare of the same repeat: median [min..max]:"
        )
        for n in sorted({e["n"] for e in ratios}):
            parts = []
            for stack in PLATFORM_STACKS:
                e = rows.get((stack, n), {})
                if "cpu_vs_bare" not in e:
                    continue
                low, high = e["cpu_vs_bare_range"]
                kept = e["holds"] and rows["bare", n]["holds"]
                parts.append(
                    f"{stack} ({e['loop']}) {e['cpu_vs_bare']:.2f}x [{low:.2f}..{high:.2f}]"
                    + (" " if kept else "*")
                )
            p(f"  N={n:<5} " + "   ".join(parts))
        p(
            "  (* one of the two did not keep up at this N: backlog and batching distort CPU "
            "per frame; compare unstarred rows)"
        )
    recording_rows = [
        (n, base, rows[base, n], rows[base + "+rec", n])
        for base in ("uvicorn", "daphne")
        for n in sorted({e["n"] for e in summary["rows"]})
        if "rtt_p50_ms" in rows.get((base, n), {})
        and "rtt_p50_ms" in rows.get((base + "+rec", n), {})
    ]
    if recording_rows:
        p()
        p(
            "Recording on vs off (X+rec vs X, same N; budget: p50 within "
            f"{RECORDING_P50_BUDGET_MS:g} ms):"
        )
        for n, base, off, on in recording_rows:
            delta = on["rtt_p50_ms"] - off["rtt_p50_ms"]
            verdict = "ok" if abs(delta) <= RECORDING_P50_BUDGET_MS else "OVER BUDGET"
            p(
                f"  {base:<8} N={n:<5} p50 off {off['rtt_p50_ms']:.2f} on {on['rtt_p50_ms']:.2f} "
                f"({delta:+.2f} ms, {verdict}); p99 off {off['rtt_p99_ms']:.2f} "
                f"on {on['rtt_p99_ms']:.2f}; cpu us/frame off {off['cpu_us_per_frame']:.0f} "
                f"on {on['cpu_us_per_frame']:.0f}; delivered {on['delivered']}/{on['sent']}"
            )
    p()
    p(
        "Capacity (largest N tested with 100% delivery, no errors, "
        f"added p99 <= {P99_BUDGET_MS:g} ms; direct: absolute p99): in the median / in every repeat"
    )
    for stack, n in summary["capacity"].items():
        every = summary["capacity_every_run"].get(stack)
        p(
            f"  {stack:<12} {n if n is not None else 'none of the tested N'} / "
            f"{every if every is not None else 'none of the tested N'}"
        )
    if summary["noisy_runs"]:
        p()
        p(f"WARNING: {quiet_verdict(summary)}.")


# --------------------------------------------------------------------------- main


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--sessions",
        default=None,
        help="comma-separated concurrent session counts (default 10,50,100,150,200)",
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="streaming time per run, warm-up included (default 10)",
    )
    parser.add_argument(
        "--warmup",
        type=float,
        default=None,
        help="first seconds of each run not measured (default 1)",
    )
    parser.add_argument(
        "--repeat", type=int, default=None, help="repeats, medians reported (default 3)"
    )
    parser.add_argument(
        "--stacks",
        default=",".join(DEFAULT_STACKS),
        help=f"comma-separated subset of {','.join(STACKS)} (default {','.join(DEFAULT_STACKS)})",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke test: --sessions 10,50 --seconds 3 --repeat 1 (explicit options win)",
    )
    parser.add_argument("--json", metavar="PATH", help="also write every run and the summary")
    parser.add_argument(
        "--clients",
        type=int,
        default=0,
        help="load-generator processes per run (default: N/sessions-per-client)",
    )
    parser.add_argument("--sessions-per-client", type=int, default=100)
    parser.add_argument(
        "--drain",
        type=float,
        default=2.0,
        help="seconds to wait for outstanding echoes after the last send",
    )
    parser.add_argument(
        "--uvicorn-ws",
        default=PRODUCTION.uvicorn_ws,
        choices=("relay", "websockets-sansio"),
        help="uvicorn's WebSocket protocol: relay (production: voiceplatform.serve's "
        "RelayWebSocketProtocol) or uvicorn's own websockets-sansio (pauses reading per frame)",
    )
    parser.add_argument(
        "--uvicorn-loop",
        default=PRODUCTION.uvicorn_loop,
        choices=("uvloop", "asyncio"),
        help="event loop of the uvicorn stacks (default uvloop, as in production)",
    )
    parser.add_argument(
        "--daphne-log-args",
        default=PRODUCTION.daphne_log_args,
        choices=("plain", "stock"),
        help="autobahn's per-frame debug-log arguments: plain (production) or stock (coloured)",
    )
    parser.add_argument(
        "--daphne-loop",
        default=PRODUCTION.daphne_loop,
        choices=("uvloop", "asyncio"),
        help="event loop under Daphne's Twisted reactor (default uvloop, as voiceplatform.serve)",
    )
    parser.add_argument(
        "--profile",
        metavar="DIR",
        help="py-spy the relays during the window (collapsed stacks in DIR; "
        "needs py-spy in the venv; CPU figures then include its overhead)",
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep per-run server logs")
    args = parser.parse_args(argv)
    defaults = {"sessions": "10,50,100,150,200", "seconds": 10.0, "warmup": 1.0, "repeat": 3}
    if args.quick:
        defaults = {"sessions": "10,50", "seconds": 3.0, "warmup": 0.5, "repeat": 1}
    for key, value in defaults.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    args.sessions = sorted({int(x) for x in str(args.sessions).split(",") if x.strip()})
    args.stacks = [s.strip() for s in args.stacks.split(",") if s.strip()]
    unknown = set(args.stacks) - set(STACKS)
    if unknown:
        parser.error(f"unknown stacks: {', '.join(sorted(unknown))}")
    args.stacks = [s for s in STACKS if s in args.stacks]
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
    if args.warmup >= args.seconds:
        parser.error("--warmup must be shorter than --seconds")
    return args


def main(argv=None) -> int:
    cfg = parse_args(argv)
    logroot = Path(tempfile.mkdtemp(prefix="vp-bench-logs-"))
    platform = None
    started = time.monotonic()
    try:
        if any(s in PLATFORM_STACKS for s in cfg.stacks):
            platform = Platform()
            log(f"bench: preparing the platform (migrate, tenant, agent, key) in {platform.dir}")
            platform.prepare()
        runs = []
        total = cfg.repeat * len(cfg.sessions) * len(cfg.stacks)
        done = 0
        for rep in range(cfg.repeat):
            for n in cfg.sessions:
                for stack in cfg.stacks:
                    done += 1
                    logdir = logroot / f"r{rep}-n{n}-{stack}"
                    logdir.mkdir()
                    run = run_once(stack, n, cfg, platform, logdir)
                    run["repeat"] = rep
                    runs.append(run)
                    if "failed" in run:
                        log(f"bench [{done}/{total}] {stack} N={n}: FAILED {run['failed']}")
                        for name, tail in run.get("logs", {}).items():
                            if tail:
                                log(
                                    f"  --- {name} log tail ---\n  "
                                    + tail[-800:].replace("\n", "\n  ")
                                )
                    else:
                        log(
                            f"bench [{done}/{total}] {stack} N={n}: "
                            f"rtt p50 {run['rtt_p50_ms']:.2f} "
                            f"p99 {run['rtt_p99_ms']:.2f} ms, {run['delivered']}/{run['sent']} "
                            f"delivered, {run['cpu_us_per_frame']:.0f} us/frame, "
                            f"{run['error_events']} errors"
                            + (f", first: {run['errors'][0]}" if run["errors"] else "")
                            + (f", closed: {run['closed'][0]}" if run["closed"] else "")
                            + (
                                f", connect failures: {run['connect_failures'][0]}"
                                if run["connect_failures"]
                                else ""
                            )
                        )
        summary = summarize(runs, cfg.stacks, cfg.sessions)
        print_report(summary, cfg)
        print(f"\n(total {time.monotonic() - started:.0f}s)")
        if cfg.json:
            payload = {
                "config": {k: v for k, v in vars(cfg).items() if k != "json"},
                "cpus": os.cpu_count(),
                "summary": summary,
                "runs": runs,
            }
            Path(cfg.json).write_text(json.dumps(payload, indent=2, default=str))
        return 0
    finally:
        if platform is not None:
            platform.cleanup()
        if cfg.keep_logs:
            log(f"bench: logs kept in {logroot}")
        else:
            shutil.rmtree(logroot, ignore_errors=True)
