"""Benchmark: the largest training window the local backend handles, measured up to failure.

For each window size (transactions in the 28-day window), smallest first, it generates the
flagship's demo data with the project's generator and runs the plain path of bench/lifecycle.py
(one round, one xgboost trial, every feature group: the same section functions in one plain Python
process), each in a child process whose memory is capped, and records per size: success or how
it failed (which step or section, MemoryError / killed at the cap / other error), wall time per
section and per million rows, the generator's time apart, and peak memory.

The cap (``--cap-gb``, default 19 GB, leaving room on a shared 23 GB machine):

- a memory cgroup made for the size under this process's own (cgroup v2: ``memory.max``, swap 0;
  cgroup v1: ``memory.limit_in_bytes`` and ``memory.memsw.limit_in_bytes``); a child that goes
  past it is killed by the kernel's OOM killer inside that cgroup, nothing outside it;
- else (no writable cgroup) ``RLIMIT_AS`` set in the child: allocations past it raise MemoryError.

Each child's ``oom_score_adj`` is 1000, so that if the machine itself runs short, the measurement
is what gets killed. Peak memory is the child's peak RSS as ``wait4`` reports it (the child and any
process it waited for) and, with a cgroup, the cgroup's peak usage (which also holds the page cache
of the files the run writes, reclaimable, so it can sit at the cap without any failure).

Sizes are run in order; the climb stops at the first failure. With ``--deadline HH:MM`` (UTC) a
size whose time, extrapolated from the largest one measured, would end after the deadline is not
started (recorded as not run), and a child still running at the deadline is stopped (recorded as
stopped, not as a failure). The working folder of each size is removed after it. Results are merged
by size into ``bench/results/largest-window-<date>.json``, so sizes can be run in separate calls.

    .venv/bin/python bench/largest_window.py --rows 4000000 8000000
    .venv/bin/python bench/largest_window.py --rows 16000000 24000000 32000000 40000000 --deadline 09:20
    .venv/bin/python bench/largest_window.py --show            # the table of today's results file
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path[:0] = [str(Path(__file__).resolve().parent)]

import lifecycle  # noqa: E402  (bench/lifecycle.py)

ROOT = lifecycle.ROOT
PY = lifecycle.PY
SECTIONS = lifecycle.SECTIONS
DEFAULT_ROWS = [4_000_000, 8_000_000, 16_000_000, 24_000_000, 32_000_000, 40_000_000, 48_000_000, 56_000_000]
GB = 1024**3


class Cap:
    """A memory cap for one child process: a cgroup of its own if one can be made, else RLIMIT_AS."""

    def __init__(self, limit: int, name: str) -> None:
        self.limit = limit
        self.dir: Path | None = None
        self.version = 0
        for version, base in _own_memory_cgroups():
            try:
                d = base / name
                d.mkdir(exist_ok=True)
                if version == 2:
                    (d / "memory.max").write_text(str(limit))
                    with contextlib.suppress(OSError):
                        (d / "memory.swap.max").write_text("0")
                else:
                    (d / "memory.limit_in_bytes").write_text(str(limit))
                    with contextlib.suppress(OSError):  # only with swap accounting
                        (d / "memory.memsw.limit_in_bytes").write_text(str(limit))
                self.dir, self.version = d, version
                break
            except OSError:
                with contextlib.suppress(OSError):
                    (base / name).rmdir()
        self.mechanism = (
            f"cgroup v{self.version} {self.dir} "
            + ("memory.max" if self.version == 2 else "memory.limit_in_bytes (+ memsw)")
            if self.dir
            else "RLIMIT_AS (setrlimit in the child)"
        )

    def preexec(self) -> None:
        """Runs in the child between fork and exec."""
        with open("/proc/self/oom_score_adj", "w") as f:
            f.write("1000")
        if self.dir:
            (self.dir / "cgroup.procs").write_text(str(os.getpid()))
        else:
            resource.setrlimit(resource.RLIMIT_AS, (self.limit, self.limit))

    def reset_peak(self) -> None:
        if self.dir and self.version == 1:
            with contextlib.suppress(OSError):
                (self.dir / "memory.max_usage_in_bytes").write_text("0")

    def peak_mb(self) -> float | None:
        if not self.dir:
            return None
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.dir / name).read_text()) / 1024**2
        except (OSError, ValueError):
            return None

    def oom_kills(self) -> int | None:
        if not self.dir:
            return None
        name = "memory.oom_control" if self.version == 1 else "memory.events"
        with contextlib.suppress(OSError, ValueError):
            for line in (self.dir / name).read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "oom_kill":
                    return int(value)
        return None

    def failcnt(self) -> int | None:
        if self.dir and self.version == 1:
            with contextlib.suppress(OSError, ValueError):
                return int((self.dir / "memory.failcnt").read_text())
        return None

    def remove(self) -> None:
        if self.dir:
            for _ in range(50):
                try:
                    self.dir.rmdir()
                    return
                except OSError:
                    time.sleep(0.1)


def _own_memory_cgroups() -> list[tuple[int, Path]]:
    """This process's memory cgroup directories, v2 first (where its memory controller is on)."""
    out: list[tuple[int, Path]] = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return out
    for line in lines:
        _, controllers, path = line.split(":", 2)
        rel = path.lstrip("/")
        if controllers == "":
            root = Path("/sys/fs/cgroup")
            if "memory" in _read(root / "cgroup.controllers").split():
                out.insert(0, (2, root / rel))
        elif "memory" in controllers.split(","):
            out.append((1, Path("/sys/fs/cgroup/memory") / rel))
    return out


def _read(path: Path) -> str:
    try:
        return path.read_text()
    except OSError:
        return ""


def run_capped(cmd: list[str], env: dict[str, str], cap: Cap, logs: Path, stop_at: float | None) -> dict[str, Any]:
    """Run ``cmd`` under ``cap``; its wall time, exit, peak RSS (wait4) and the cgroup's figures."""
    cap.reset_peak()
    kills0 = cap.oom_kills() or 0
    with (logs.with_suffix(".out")).open("w") as out, (logs.with_suffix(".err")).open("w") as err:
        t0 = time.time()
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=err, preexec_fn=cap.preexec)
        stopped = 0.0
        while True:
            pid, status, ru = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if stop_at is not None and time.time() > stop_at:
                if not stopped:
                    proc.send_signal(signal.SIGTERM)  # reaped by wait4 above, never by proc.wait
                    stopped = time.time()
                elif time.time() > stopped + 30:
                    proc.send_signal(signal.SIGKILL)
            time.sleep(0.2)
        wall = time.time() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout = logs.with_suffix(".out").read_text()
    stderr = logs.with_suffix(".err").read_text()
    kills = (cap.oom_kills() or 0) - kills0 if cap.dir else None
    return {
        "wall_s": wall,
        "returncode": proc.returncode,
        "stopped_at_deadline": bool(stopped),
        "peak_rss_mb": ru.ru_maxrss / 1024,
        "cgroup_peak_mb": cap.peak_mb(),
        "cgroup_oom_kills": kills,
        "cgroup_failcnt": cap.failcnt(),
        "stdout": stdout,
        "stderr_tail": stderr[-3000:],
    }


def how_it_failed(run: dict[str, Any]) -> str:
    if run["stopped_at_deadline"]:
        return "stopped at the deadline (not a failure)"
    if run["returncode"] == -signal.SIGKILL:
        if run.get("cgroup_oom_kills"):
            return "killed by the OOM killer at the memory cap (SIGKILL)"
        return "killed (SIGKILL)"
    if "MemoryError" in run["stderr_tail"]:
        return "MemoryError"
    lines = [line for line in run["stderr_tail"].splitlines() if line.strip()]
    return f"exit {run['returncode']}: " + (lines[-1][:300] if lines else "no message")


def read_progress(path: Path) -> tuple[dict[str, float], str | None, float | None]:
    """The sections finished (their seconds), the one under way when the child stopped, its start."""
    done: dict[str, float] = {}
    current, started = None, None
    if path.exists():
        for line in path.read_text().splitlines():
            event = json.loads(line)
            if "start" in event:
                current, started = event["start"], event["t"]
            else:
                done[event["end"]] = event["s"]
                current, started = None, None
    return done, current, started


def measure(n: int, cap_bytes: int, tmp: Path | None, stop_at: float | None, keep: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix=f"bench-window-{n}-", dir=tmp))
    cap = Cap(cap_bytes, f"bench-largest-window-{os.getpid()}-{n}")
    result: dict[str, Any] = {"rows": n, "cap_gb": cap_bytes / GB, "cap": cap.mechanism, "started": _now()}
    result["loadavg_at_start"] = os.getloadavg()  # the machine may be shared: its load, start and end
    try:
        env = lifecycle.airflow_env(work, work / "artifacts-plain")
        print(f"[{n:,} rows] generating data (capped) ...", file=sys.stderr, flush=True)
        gen = run_capped(
            [PY, str(Path(__file__).resolve()), "--gen-child", str(work), "--rows", str(n)],
            env,
            cap,
            work / "generate",
            stop_at,
        )
        result["generate"] = {k: v for k, v in gen.items() if k != "stdout"}
        result["disk_after_generate_mb"] = _du_mb(work)
        if gen["returncode"] != 0:
            result.update(ok=False, failed_in="generate", failure=how_it_failed(gen))
            return result
        result["generate"].update(json.loads(gen["stdout"].strip().splitlines()[-1]))
        result["rows_generated"] = result["generate"]["rows_generated"]

        print(f"[{n:,} rows] plain lifecycle (capped) ...", file=sys.stderr, flush=True)
        progress = work / "progress.jsonl"
        t_spawn = time.time()
        cmd = [PY, str(Path(lifecycle.__file__).resolve()), "--plain-child", str(work)]
        cmd += ["--spawned-at", repr(t_spawn), "--progress", str(progress)]
        plain = run_capped(cmd, env, cap, work / "plain", stop_at)
        result["disk_after_plain_mb"] = _du_mb(work)
        done, current, started = read_progress(progress)
        result["plain"] = {k: v for k, v in plain.items() if k != "stdout"} | {"sections_s": done}
        if plain["returncode"] != 0:
            result.update(ok=False, failed_in=current or "start or exit of the process", failure=how_it_failed(plain))
            if started is not None:
                result["plain"]["failed_section_ran_s"] = t_spawn + plain["wall_s"] - started
            return result
        out = json.loads(plain["stdout"].strip().splitlines()[-1])
        out.pop("t_end", None)
        result["plain"].update(out)
        result["ok"] = True
        return result
    finally:
        result["finished"] = _now()
        result["loadavg_at_end"] = os.getloadavg()
        rows_m = result.get("rows_generated", n) / 1e6
        if "plain" in result:
            result["plain"]["s_per_m_rows"] = {k: v / rows_m for k, v in result["plain"]["sections_s"].items()}
        if "generate_s" in result.get("generate", {}):
            result["generate"]["s_per_m_rows"] = result["generate"]["generate_s"] / rows_m
        cap.remove()
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def gen_child(work: Path, rows: int) -> None:
    prep = lifecycle.prepare(work, rows)
    prep["peak_rss_self_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(prep), flush=True)


def _du_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1024**2


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def predicted_s(results: list[dict[str, Any]], n: int) -> float | None:
    """Seconds a size would take, linear in rows from the largest size that succeeded, plus 15%."""
    ok = [r for r in results if r.get("ok")]
    if not ok:
        return None
    last = max(ok, key=lambda r: r["rows"])
    per_row = (last["generate"]["wall_s"] + last["plain"]["wall_s"]) / last["rows"]
    return 1.15 * per_row * n


def table(results: list[dict[str, Any]]) -> str:
    not_run = sorted((r for r in results if "not_run" in r), key=lambda r: r["rows"])
    results = sorted((r for r in results if "generate" in r), key=lambda r: r["rows"])
    width = 22
    head = f"{'seconds (s per M rows)':32}" + "".join(f"{r['rows']:>{width},}" for r in results)
    lines = [head, "-" * len(head)]

    def cell(seconds: float | None, rows: int) -> str:
        if seconds is None:
            return f"{'-':>{width}}"
        return f"{f'{seconds:.1f} ({seconds / rows * 1e6:.2f})':>{width}}"

    lines.append(
        f"{'generate (apart)':32}" + "".join(cell(r["generate"].get("generate_s"), r["rows"]) for r in results)
    )
    for s in SECTIONS:
        cells = []
        for r in results:
            secs = r.get("plain", {}).get("sections_s", {})
            if s in secs:
                cells.append(cell(secs[s], r["rows"]))
            elif not r.get("ok") and r.get("failed_in") == s:
                ran = r["plain"].get("failed_section_ran_s", 0)
                cells.append(f"{f'FAILED after {ran:.0f}':>{width}}")
            else:
                cells.append(f"{'-':>{width}}")
        lines.append(f"{s:32}" + "".join(cells))
    lines.append("-" * len(head))

    def row(label: str, fn) -> None:
        lines.append(f"{label:32}" + "".join(f"{fn(r):>{width}}" for r in results))

    row("sections, sum", lambda r: cell(sum(r.get("plain", {}).get("sections_s", {}).values()), r["rows"]).strip())
    row("plain process wall s", lambda r: f"{r['plain']['wall_s']:.1f}" if "plain" in r else "-")
    row(
        "peak RSS MB (gen / plain)",
        lambda r: (
            f"{r['generate']['peak_rss_mb']:.0f} / " + (f"{r['plain']['peak_rss_mb']:.0f}" if "plain" in r else "-")
        ),
    )
    row(
        "cgroup peak MB (gen / plain)",
        lambda r: (
            f"{r['generate'].get('cgroup_peak_mb') or 0:.0f} / "
            + (f"{r['plain'].get('cgroup_peak_mb') or 0:.0f}" if "plain" in r else "-")
        ),
    )
    row("data on disk MB", lambda r: f"{r.get('disk_after_plain_mb', r.get('disk_after_generate_mb', 0)):.0f}")
    row("outcome", lambda r: "ok" if r.get("ok") else f"FAILED in {r.get('failed_in')}"[: width - 1])
    lines.append("")
    for r in results:
        if not r.get("ok"):
            lines.append(f"{r['rows']:,}: failed in {r.get('failed_in')}: {r.get('failure')}")
    for r in not_run:
        lines.append(f"{r['rows']:,}: not run: {r['not_run']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, nargs="*", default=DEFAULT_ROWS)
    p.add_argument("--cap-gb", type=float, default=19.0, help="memory cap of each child (GiB)")
    p.add_argument("--deadline", default=None, help="HH:MM UTC today: start no size predicted to end later")
    p.add_argument(
        "--no-skip",
        action="store_true",
        help="start every size even if predicted past the deadline (a size expected to fail early); still stop at it",
    )
    p.add_argument("--keep-going", action="store_true", help="run the remaining sizes after a failure")
    p.add_argument("--tmp", type=Path, default=None, help="where the working folders go (default: $TMPDIR)")
    p.add_argument("--keep", action="store_true", help="keep the working folders")
    p.add_argument("--out", type=Path, default=None, help="default bench/results/largest-window-<date>.json")
    p.add_argument("--show", action="store_true", help="print the table of the results file and exit")
    p.add_argument("--gen-child", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.gen_child:
        sys.path[:0] = [str(ROOT), str(ROOT / "plugins")]
        gen_child(args.gen_child, args.rows[0])
        return 0
    stop_at = None
    if args.deadline:
        hh, mm = map(int, args.deadline.split(":"))
        now = dt.datetime.now(dt.UTC)
        stop_at = now.replace(hour=hh, minute=mm, second=0, microsecond=0).timestamp()
    out = args.out or ROOT / "bench" / "results" / f"largest-window-{dt.date.today().isoformat()}.json"
    if args.show and not args.out:  # the newest measurement (make bench shows it; measuring takes an hour)
        found = sorted((ROOT / "bench" / "results").glob("largest-window-*.json"))
        out = found[-1] if found else out
    data = json.loads(out.read_text()) if out.exists() else {}
    if args.show:
        if not data.get("results"):
            print("largest local window: not measured yet (make bench-window)")
            return 0
        print(f"largest local window, measured by make bench-window ({out.name}):")
        print(table(data["results"]))
        return 0
    by_rows = {r["rows"]: r for r in data.get("results", [])}
    cap_bytes = int(args.cap_gb * GB)
    for n in sorted(args.rows):
        guess = predicted_s(list(by_rows.values()), n)
        if stop_at is not None and guess is not None and time.time() + guess > stop_at and not args.no_skip:
            print(f"[{n:,} rows] not run: predicted {guess:.0f} s, past the deadline", file=sys.stderr, flush=True)
            by_rows.setdefault(n, {"rows": n, "not_run": f"predicted {guess:.0f} s would end past {args.deadline}"})
            continue
        r = measure(n, cap_bytes, args.tmp, stop_at, args.keep)
        r["predicted_s"] = guess
        by_rows[n] = r
        data.update(machine=lifecycle.machine(), results=sorted(by_rows.values(), key=lambda r: r["rows"]))
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json.tmp").write_text(json.dumps(data, indent=2, default=str))
        out.with_suffix(".json.tmp").replace(out)
        print(table(data["results"]), flush=True)
        if not r.get("ok") and not args.keep_going:
            break
    data.update(machine=lifecycle.machine(), results=sorted(by_rows.values(), key=lambda r: r["rows"]))
    out.with_suffix(".json.tmp").write_text(json.dumps(data, indent=2, default=str))
    out.with_suffix(".json.tmp").replace(out)
    print(f"machine: {lifecycle.machine()}\nwritten: {out.relative_to(ROOT) if out.is_relative_to(ROOT) else out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
