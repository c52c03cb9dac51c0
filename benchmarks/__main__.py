"""``python -m benchmarks``: every benchmark section, markdown tables, docs/benchmarks.md, plots.

    python -m benchmarks                  # all sections, medians of 5 runs (tens of minutes)
    python -m benchmarks --quick          # small sizes, no 10,000-pair job
    python -m benchmarks --only transport # one section: transport, http, ik, e2e
    python -m benchmarks --runs 9 --no-write
    python -m benchmarks --also all       # + the control loop, robots, liveness and chaos
    python -m benchmarks --quick --only transport --also chaos

``--also NAME`` then runs ``python -m benchmarks.NAME`` (shorter with ``--quick``), which
prints its tables. The GPU check (``python -m benchmarks.gpu_check``) needs a GPU: run alone.

Needs the ``bench`` extra (fastapi, uvicorn, python-multipart, requests, matplotlib; flask
for the Flask rows). Sections needing the IK engine skip with a message when it is missing.
"""

from __future__ import annotations

import argparse
import importlib
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks import bench_ik, e2e, report, transport, vs_http
from benchmarks._common import Config, Section
from benchmarks._harness import ROOT

SECTIONS: dict[str, Callable[[Config], Section]] = {
    "transport": transport.run,
    "http": vs_http.run,
    "ik": bench_ik.run,
    "e2e": e2e.run,
}

ALSO: dict[str, tuple[str, list[str]]] = {
    "loop": ("control_loop", ["--rounds", "3", "--poses", "200"]),
    "robots": ("robots", ["--targets", "256", "--singles", "16"]),
    "liveness": ("liveness", ["--seconds", "30"]),
    "chaos": ("chaos", ["--minutes", "1"]),
}  # (module, its arguments with --quick; without, its defaults)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--quick", action="store_true", help="small sizes; skip the 10,000-pair job"
    )
    parser.add_argument(
        "--only", choices=list(SECTIONS), action="append", help="run only this section (repeatable)"
    )
    parser.add_argument(
        "--also",
        choices=[*ALSO, "all"],
        action="append",
        default=[],
        help="then run this benchmark with its own command (repeatable; all: every one)",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="measured runs per cell (default 5, --quick 3)"
    )
    parser.add_argument("--no-write", action="store_true", help="print only; do not write docs/")
    parser.add_argument(
        "--docs", type=Path, default=ROOT / "docs", help="where benchmarks.md and the PNGs go"
    )
    args = parser.parse_args(argv)
    runs = args.runs if args.runs is not None else (3 if args.quick else 5)
    if runs < 1:
        parser.error("--runs must be at least 1")
    cfg = Config(runs=runs, quick=args.quick)
    command = "python -m benchmarks" + (
        ""
        if argv is None and len(sys.argv) <= 1
        else " " + shlex.join(sys.argv[1:] if argv is None else argv)
    )
    info = report.machine()
    sections: dict[str, Section] = {}
    for key in args.only or list(SECTIONS):
        print(f"== {key}", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        sections[key] = SECTIONS[key](cfg)
        print(f"== {key}: {time.perf_counter() - t0:.0f}s", file=sys.stderr, flush=True)
        print(sections[key].markdown(), flush=True)
    print(report.targets(sections).markdown())
    if not args.no_write:
        args.docs.mkdir(parents=True, exist_ok=True)
        pngs = report.plots(sections, args.docs)
        path = args.docs / "benchmarks.md"
        text = report.markdown(sections, info, command, pngs, report.kept(path, sections))
        path.write_text(text, encoding="utf-8")
        print(
            f"wrote {args.docs / 'benchmarks.md'}" + "".join(f", {p}" for p in pngs),
            file=sys.stderr,
        )
    for name in list(ALSO) if "all" in args.also else dict.fromkeys(args.also):
        module, quick = ALSO[name]
        print(f"== {name}: python -m benchmarks.{module}", file=sys.stderr, flush=True)
        done = importlib.import_module(f"benchmarks.{module}").main(quick if args.quick else [])
        if done:
            return int(done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
