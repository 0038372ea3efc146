"""Helpers shared by the benchmark scripts: provenance, isolated runs, statistics, result files.

Every results file records the machine, the package versions, the command and the date, so a
number in the README can be traced back to how it was produced. Implementations run each in
its own process (peak memory is then theirs alone), alternated across repeats (so slow drifts of
a shared machine hit all of them alike), and are summarised by medians.
"""

from __future__ import annotations

import datetime as _dt
import importlib.metadata
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
GIB = 1024**3

DEFAULT_PACKAGES = (
    "torch",
    "transformers",
    "peft",
    "metanlp",
    "learn2learn",
    "torchopt",
    "higher",
    "setfit",
    "numpy",
)


# ---- provenance -----------------------------------------------------------------------------
def machine_info() -> dict[str, Any]:
    """CPU model, core count, memory, OS and Python of this machine."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem = round(int(line.split()[1]) * 1024 / GIB, 1)
                break
    except OSError:
        pass
    info: dict[str, Any] = {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": mem,
        "os": platform.platform(),
        "python": platform.python_version(),
        "hostname": platform.node(),
    }
    try:
        import torch

        info["torch_threads"] = torch.get_num_threads()
        info["cuda"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def package_versions(names: Iterable[str] = DEFAULT_PACKAGES) -> dict[str, str | None]:
    """Installed version of each distribution (``None`` when it is not installed)."""
    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit() -> str | None:
    """The repository's HEAD commit (with ``+dirty`` when tracked files changed), if known."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def provenance(
    argv: Sequence[str] | None = None, packages: Iterable[str] = DEFAULT_PACKAGES
) -> dict[str, Any]:
    """Everything a results file records about how it was made: date, command, machine, versions."""
    argv = list(sys.argv if argv is None else argv)
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": " ".join(shlex.quote(a) for a in [Path(sys.executable).name, *argv]),
        "git_commit": git_commit(),
        "machine": machine_info(),
        "versions": package_versions(packages),
    }


# ---- memory of this process -----------------------------------------------------------------
def _status_kib(field: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def current_rss_bytes() -> int | None:
    """Resident memory of this process now (Linux), else ``None``."""
    kib = _status_kib("VmRSS")
    return None if kib is None else kib * 1024


def reset_peak_rss() -> bool:
    """Reset this process's peak-RSS counter (Linux ``clear_refs`` 5); False where unsupported.

    After a reset, `peak_rss_bytes` reports the peak of what ran since, not since start-up.
    """
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident memory of this process (since start-up or the last `reset_peak_rss`)."""
    kib = _status_kib("VmHWM")
    if kib is not None:
        return kib * 1024
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux


# ---- isolated runs --------------------------------------------------------------------------
@dataclass
class IsolatedRun:
    """Outcome of one `run_isolated` call."""

    returncode: int
    stdout: str
    stderr: str
    wall_s: float
    peak_rss_bytes: int
    ru_maxrss_bytes: int
    timed_out: bool = False


def run_isolated(
    cmd: Sequence[str],
    *,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> IsolatedRun:
    """Run ``cmd`` in its own process and measure that process's peak resident memory.

    The peak is the child's own high-water mark (``VmHWM`` of ``/proc/<pid>/status``, polled
    every 20 ms; it only grows, so just a spike in the last poll interval could be missed).
    ``ru_maxrss`` from ``os.wait4`` is kept as ``ru_maxrss_bytes`` but is not the peak: Linux
    carries the forking parent's resident size over the ``exec`` into it.

    Example:
        ```python
        >>> run = run_isolated([sys.executable, "-c", "x = bytearray(200 * 2**20)"])
        >>> run.peak_rss_bytes > 200 * 2**20
        True
        ```
    """
    import tempfile

    full_env = dict(os.environ if env is None else env)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        # Output goes to files, not pipes, so a chatty child can never block on a full pipe
        # while we poll; the child is reaped with wait4 to get its own rusage.
        proc = subprocess.Popen(list(cmd), stdout=out, stderr=err, env=full_env, cwd=cwd)
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        timed_out = False
        peak = 0
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            peak = max(peak, _child_hwm_bytes(proc.pid))
            if deadline is not None and time.monotonic() > deadline:
                timed_out = True
                proc.kill()
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode(errors="replace")
        stderr = err.read().decode(errors="replace")
    return IsolatedRun(
        returncode=proc.returncode,
        stdout=stdout,
        stderr=stderr,
        wall_s=wall,
        peak_rss_bytes=peak,
        ru_maxrss_bytes=int(usage.ru_maxrss) * 1024,
        timed_out=timed_out,
    )


def failure_reason(proc: IsolatedRun, timeout_s: float | None = None) -> str:
    """Why an isolated process gave no result: timeout, SIGKILL (out of memory), or its exit code."""
    if proc.timed_out:
        why = f"timed out after {timeout_s:.0f} s" if timeout_s else "timed out"
    elif proc.returncode == -9:
        why = "killed by SIGKILL, most likely the out-of-memory killer"
    else:
        why = f"exit code {proc.returncode}"
    return why + f", peak RSS {proc.peak_rss_bytes / GIB:.1f} GiB"


def run_json_worker(
    cmd: Sequence[str],
    *,
    timeout_s: float | None = None,
    env: Mapping[str, str] | None = None,
    cwd: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """`run_isolated` a worker that prints one JSON object as the last line of its stdout.

    Returns that object with ``process_peak_rss_bytes`` and ``process_wall_s`` added. A worker
    that fails (non-zero exit, killed, timed out, no JSON on its last line) is a result, not an
    exception: ``{"status": "failed", "error": <why, and the end of its stderr>}`` plus the same
    two measures.

    Example:
        ```python
        >>> run_json_worker([sys.executable, "-c", "print('{\\"x\\": 1}')"])["x"]
        1
        ```
    """
    proc = run_isolated(cmd, timeout_s=timeout_s, env=env, cwd=cwd)
    lines = proc.stdout.strip().splitlines()
    result: dict[str, Any] | None = None
    if proc.returncode == 0 and not proc.timed_out and lines:
        try:
            result = json.loads(lines[-1])
        except json.JSONDecodeError:
            result = None
    if not isinstance(result, dict):
        tail = " ".join(proc.stderr[-600:].split())
        result = {
            "status": "failed",
            "error": f"worker process gave no result ({failure_reason(proc, timeout_s)}); "
            f"stderr ends: {tail}",
        }
    result.update(process_peak_rss_bytes=proc.peak_rss_bytes, process_wall_s=proc.wall_s)
    return result


def _child_hwm_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass  # exited between polls, or not Linux
    return 0


def alternating_schedule(names: Sequence[str], repeats: int) -> list[tuple[int, str]]:
    """``(repeat, name)`` pairs, the order rotated by one each repeat so no name always goes first.

    Example:
        ```python
        >>> alternating_schedule(["a", "b", "c"], 2)
        [(0, 'a'), (0, 'b'), (0, 'c'), (1, 'b'), (1, 'c'), (1, 'a')]
        ```
    """
    if repeats < 1:
        raise ValueError(f"repeats={repeats!r} must be >= 1.")
    names = list(names)
    if not names:
        return []
    out = []
    for r in range(repeats):
        shift = r % len(names)
        out.extend((r, n) for n in names[shift:] + names[:shift])
    return out


# ---- statistics -----------------------------------------------------------------------------
def median(values: Iterable[float]) -> float:
    """Median of finite values (NaN for none)."""
    xs = sorted(v for v in values if v is not None and math.isfinite(v))
    if not xs:
        return float("nan")
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def ratio(a: float | None, b: float | None) -> float | None:
    """``a / b``, or ``None`` when either is missing or ``b`` is 0."""
    if a is None or b is None or not math.isfinite(a) or not math.isfinite(b) or b == 0:
        return None
    return a / b


def gradient_difference(got: Mapping[str, Any], ref: Mapping[str, Any]) -> dict[str, float]:
    """How far two meta-gradients (name -> tensor) are apart.

    Returns ``max_abs`` (largest elementwise difference), ``rel`` (‖got − ref‖ / ‖ref‖ over
    all tensors together) and ``max_rel_tensor`` (the worst per-tensor relative difference).
    Both dicts must name the same tensors with the same shapes.
    """

    if set(got) != set(ref):
        only_got, only_ref = sorted(set(got) - set(ref)), sorted(set(ref) - set(got))
        raise ValueError(
            f"Meta-gradients name different tensors: only in the first {only_got[:5]}, only in "
            f"the reference {only_ref[:5]}."
        )
    max_abs, diff_sq, ref_sq, worst = 0.0, 0.0, 0.0, 0.0
    for name in sorted(ref):
        a, b = got[name].double(), ref[name].double()
        if a.shape != b.shape:
            raise ValueError(f"{name}: shape {tuple(a.shape)} != reference {tuple(b.shape)}.")
        d = (a - b).abs()
        max_abs = max(max_abs, float(d.max()) if d.numel() else 0.0)
        dn, bn = float(d.pow(2).sum()), float(b.pow(2).sum())
        diff_sq, ref_sq = diff_sq + dn, ref_sq + bn
        if bn > 0:
            worst = max(worst, math.sqrt(dn / bn))
        elif dn > 0:
            worst = math.inf
    rel = math.sqrt(diff_sq / ref_sq) if ref_sq > 0 else (0.0 if diff_sq == 0 else math.inf)
    return {"max_abs": max_abs, "rel": rel, "max_rel_tensor": worst}


# ---- result files ---------------------------------------------------------------------------
def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON (NaN/inf become null), creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(_json_safe(data), indent=2, sort_keys=False) + "\n")
    return path


def _json_safe(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, Mapping):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if hasattr(x, "item") and callable(x.item):  # numpy / torch scalars
        return _json_safe(x.item())
    return x


def fmt(x: Any, digits: int = 3) -> str:
    """A table cell: ``-`` for missing, compact numbers otherwise."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "-"
    if isinstance(x, float):
        if x != 0 and (abs(x) < 10 ** -(digits - 1) or abs(x) >= 10**6):
            return f"{x:.{max(digits - 1, 1)}e}"
        return f"{x:.{digits}g}" if abs(x) < 1 else f"{x:.{digits}f}".rstrip("0").rstrip(".")
    return str(x).replace("|", "\\|").replace("\n", " ")


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    """A GitHub Markdown table; cells go through `fmt`."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        if len(row) != len(header):
            raise ValueError(
                f"Row {list(row)!r} has {len(row)} cells; the header has {len(header)}."
            )
        lines.append("| " + " | ".join(fmt(c) for c in row) + " |")
    return "\n".join(lines)


def provenance_markdown(prov: Mapping[str, Any]) -> str:
    """A short Markdown block saying when, where and how a result was produced."""
    m, v = prov.get("machine", {}), prov.get("versions", {})
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return (
        f"- Date: {prov.get('date')}  \n- Command: `{prov.get('command')}`  \n"
        f"- Commit: {prov.get('git_commit')}  \n"
        f"- Machine: {m.get('cpu')}, {m.get('cores')} cores, {m.get('memory_gib')} GiB, "
        f"torch default threads {m.get('torch_threads')}, GPU {m.get('cuda')}  \n- Versions: {versions}\n"
    )


def write_markdown(path: str | os.PathLike, title: str, sections: Sequence[str]) -> Path:
    """Write ``# title`` followed by the given Markdown sections."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"# {title}\n\n" + "\n\n".join(s.strip() for s in sections) + "\n")
    return path


def write_grouped_bars(
    path: str | os.PathLike,
    panels: Sequence[tuple[str, Mapping[str, Mapping[str, float | None]]]],
    title: str,
) -> Path:
    """A PNG with one grouped bar chart per panel: ``(ylabel, {group: {series: value}})``.

    Missing values (``None``) leave a gap, so a failed implementation shows as absent.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.2), squeeze=False)
    for ax, (ylabel, data) in zip(axes[0], panels, strict=True):
        groups = list(data)
        order = _series_order(data)
        # A series with no value at all (an implementation that failed everywhere) is left out.
        series = sorted({s for g in groups for s, v in data[g].items() if v is not None}, key=order)
        width = 0.8 / max(len(series), 1)
        for i, s in enumerate(series):
            xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(groups))]
            ys = [data[g].get(s) for g in groups]
            ax.bar(
                [x for x, y in zip(xs, ys, strict=True) if y is not None],
                [y for y in ys if y is not None],
                width=width,
                label=s,
                color=f"C{order(s) % 10}",  # the same colour for a series in every panel
            )
        ax.set_xticks(range(len(groups)), groups, rotation=15)
        ax.set_ylabel(ylabel)
        ax.grid(axis="y", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _series_order(data: Mapping[str, Mapping[str, Any]]):
    first_seen: dict[str, int] = {}
    for g in data.values():
        for s in g:
            first_seen.setdefault(s, len(first_seen))
    return lambda s: first_seen[s]
