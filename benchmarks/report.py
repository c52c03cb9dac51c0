"""Machine description, target verdicts, the markdown report and the plots."""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks._common import Section, Table, fmt, nvidia_smi
from benchmarks._harness import ROOT


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def _jax_device() -> str:
    """Where the numbers were computed: worker processes run with ``JAX_PLATFORMS`` as set
    (default cpu); the in-process IK section uses what JAX picks here."""
    workers = os.environ.get("JAX_PLATFORMS", "cpu")
    try:
        from benchmarks.bench_ik import device_name

        here = device_name()
    except Exception as e:  # no JAX (robot-side install): the IK sections are skipped
        here = f"none ({type(e).__name__})"
    return f"workers: JAX_PLATFORMS={workers}; in-process IK section: {here}"


def machine() -> dict[str, str]:
    import zmq

    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            capture_output=True,
            text=True,
            cwd=ROOT,
        ).stdout.strip()
        commit = (commit + (" + uncommitted changes" if dirty else "")) or "unknown"
    except OSError:
        commit = "unknown"
    try:
        load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        load = "unknown"
    return {
        "CPU": cpu,
        "cores": f"{os.cpu_count()} logical ({len(os.sched_getaffinity(0))} usable)",
        "GPU": nvidia_smi(),
        "JAX device": _jax_device(),
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        "pyzmq / libzmq": f"{zmq.__version__} / {zmq.zmq_version()}",
        "jax / jaxlib": f"{_version('jax')} / {_version('jaxlib')}",
        "numpy": _version("numpy"),
        "HTTP side": f"fastapi {_version('fastapi')}, uvicorn {_version('uvicorn')}, "
        f"flask {_version('flask')}, requests {_version('requests')}",
        "zmq-ik": f"{_version('zmq-ik')} (git {commit})",
        "load average at start": load,
    }


def targets(sections: dict[str, Section]) -> Table:
    """The issue's targets, each stated plainly: met, not met, or not measured."""
    t = Table(
        "Targets",
        ["target", "measured", "met?"],
        note="From the benchmark issue and the broker issue; all measured in this run.",
    )

    def add(name: str, value: str | None, ok: bool | None) -> None:
        t.rows.append(
            [
                name,
                value or "not measured",
                "not measured" if ok is None else "**met**" if ok else "**not met**",
            ]
        )

    tr = sections.get("transport")
    if tr and tr.data.get("summary"):
        s64 = tr.data["summary"].get(64, {}).get("zmq-ik broker")
        if s64:
            r = s64["p50_vs_two_hop"]
            others = ", ".join(
                f"{_size(size)} {v['zmq-ik broker']['p50_vs_two_hop']:.2f}×"
                for size, v in tr.data["summary"].items()
                if size != 64
            )
            add(
                "broker round trip p50 ≤ 1.5× the two-hop floor (64 B)",
                f"{r:.2f}× ({s64['p50_ms']:.3f} ms); larger payloads: {others}",
                r <= 1.5,
            )
        else:
            add("broker round trip p50 ≤ 1.5× the two-hop floor (64 B)", None, None)
        rate = tr.data.get("throughput_by_workers", {}).get(2)
        add(
            "≥ 5,000 tiny requests/s through the broker with 2 echo workers",
            f"{rate:,.0f} req/s" if rate else None,
            None if rate is None else rate >= 5000,
        )
    else:
        add("broker round trip p50 ≤ 1.5× the two-hop floor (64 B)", None, None)
        add("≥ 5,000 tiny requests/s through the broker with 2 echo workers", None, None)
    http = sections.get("http")
    hd = http.data if http else {}
    solve = hd.get("solve", {}).get("zmq-ik")
    add(
        "single-pose `solve` p50 ≤ 2 ms",
        f"{solve:.2f} ms" if solve else None,
        None if not solve else solve <= 2,
    )
    pair = hd.get("pair_compute", {}).get("zmq-ik")
    add(
        "one-stroke-pair `compute` p50 ≤ 10 ms",
        f"{pair:.2f} ms" if pair else None,
        None if not pair else pair <= 10,
    )
    for fw, need in (("FastAPI", 5.0), ("Flask", 8.0)):
        rows = []
        verdicts = []
        for op, label in (("noop", "no compute"), ("solve", "solve"), ("pair", "one pair")):
            r = hd.get(op, {}).get("overhead_ratio", {}).get(fw)
            if r is not None and r == r:
                rows.append(f"{label} {r:.2f}×")
                verdicts.append(r >= need)
        add(
            f"transport overhead ≥ {need:.0f}× smaller than {fw}'s",
            "; ".join(rows) if rows else None,
            None if not verdicts else all(verdicts),
        )
    if solve:
        http_solve = [v for k, v in hd["solve"].items() if k in ("FastAPI", "Flask")]
        best = min(http_solve) if http_solve else None
        add(
            "single-pose round trip ≥ 3× faster than the faster HTTP path",
            f"{best / solve:.2f}× ({best:.2f} ms vs {solve:.2f} ms)" if best else None,
            None if not best else best / solve >= 3,
        )
    else:
        add("single-pose round trip ≥ 3× faster than the faster HTTP path", None, None)
    return t


def _size(n: int) -> str:
    from benchmarks._common import size_label

    return size_label(int(n))


def kept(path: Path, sections: dict[str, Section]) -> list[str]:
    """The ``## `` sections of the report at ``path`` that this run does not write (other
    sections; tables from the ``--also`` benchmarks, added by hand): kept when rewritten."""
    old = path.read_text(encoding="utf-8").split("\n## ")[1:] if path.exists() else []
    titles = {s.title for s in sections.values()}
    return ["## " + part.rstrip() + "\n" for part in old if part.split("\n")[0] not in titles]


def markdown(
    sections: dict[str, Section],
    info: dict[str, str],
    command: str,
    plots: list[str],
    keep: tuple[str, ...] | list[str] = (),
) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    out = [
        "# zmq-ik benchmarks",
        "",
        "Generated by `python -m benchmarks` (source: `benchmarks/`); every number below comes "
        "from one run of that command, with every compared system measured side by side in "
        "the same run. Medians of several runs after warm-up; ratios are taken within a run.",
        "",
        f"- **Command:** `{command}`",
        f"- **Date:** {now}",
    ]
    out += [f"- **{k}:** {v}" for k, v in info.items()]
    out.append("")
    out.append(
        "Everything runs on 127.0.0.1 of this one machine; each party (client, broker, "
        "workers, proxies, HTTP servers) is its own process. The machine is shared: other "
        "work ran at the same time, so absolute numbers move from run to run; the ratios, "
        "taken within a run, move less."
    )
    out.append("")
    out.append(targets(sections).markdown())
    for plot in plots:
        name = Path(plot).name
        out.append(f"![{name}]({name})\n")
    out += [*(sec.markdown() for sec in sections.values()), *keep]
    return "\n".join(out).rstrip() + "\n"


def plots(sections: dict[str, Section], docs: Path) -> list[str]:
    """Write the PNGs we have data for; returns their paths."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    written = []
    tr = sections.get("transport")
    if tr and tr.data.get("summary"):
        summary: dict[int, dict[str, dict[str, Any]]] = tr.data["summary"]
        sizes = sorted(summary)
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for system in next(iter(summary.values())):
            p50 = [summary[s][system]["p50_ms"] for s in sizes]
            p99 = [summary[s][system]["p99_ms"] for s in sizes]
            (line,) = ax.plot(sizes, p50, marker="o", label=f"{system} p50")
            ax.plot(sizes, p99, ls="--", color=line.get_color(), alpha=0.6, label=f"{system} p99")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xticks(sizes, [_size(s) for s in sizes])
        ax.set_xlabel("payload (echoed back)")
        ax.set_ylabel("round trip, ms")
        ax.set_title("Round-trip latency vs payload size (loopback)")
        ax.legend(fontsize=8)
        written.append(_save(plt, fig, ax, docs / "bench_latency.png"))
    ik = sections.get("ik")
    if ik and ik.data.get("rows"):
        rows = sorted(ik.data["rows"])
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.plot([r[0] for r in rows], [r[1] for r in rows], marker="o")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("batch size (bimanual poses per call)")
        ax.set_ylabel("poses / s")
        ax.set_title("IK throughput vs batch size (CPU, tatbot)")
        written.append(_save(plt, fig, ax, docs / "bench_ik.png"))
    return written


def _save(plt: Any, fig: Any, ax: Any, path: Path) -> str:
    """Grid, layout, write the PNG and close the figure: its path."""
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return str(path)


__all__ = ["fmt", "machine", "markdown", "plots", "targets"]
