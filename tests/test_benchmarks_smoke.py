"""Every benchmark section runs at a tiny size and produces rows, so none of them can rot.

No numbers are asserted: benchmark results are never pass/fail. The HTTP comparison needs
the ``bench`` extra (fastapi, uvicorn, ...) and is skipped without it; the IK sections skip
themselves (with a reason) while the IK engine is unavailable.
"""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

from benchmarks import _data, control_loop, e2e, ik_engine, report, transport
from benchmarks._common import Config

TINY = Config(runs=1, tiny=True, verbose=False)
pytestmark = pytest.mark.timeout(180)


def _has_rows(section) -> None:
    assert section.tables, section.skipped
    assert all(t.rows for t in section.tables)
    assert section.markdown().count("|") > 10


def test_transport_section_runs():
    section = transport.run(TINY)
    _has_rows(section)
    assert {"one hop (raw)", "two hops (raw proxy)", "zmq-ik broker"} <= {
        row[1] for row in section.tables[0].rows
    }


def test_http_section_runs():
    for module in ("fastapi", "uvicorn", "multipart", "requests"):
        pytest.importorskip(module)
    from benchmarks import vs_http

    section = vs_http.run(TINY)
    _has_rows(section)
    assert section.data["concurrent"]["zmq-ik"] > 0


@pytest.mark.parametrize("module", [ik_engine, e2e], ids=["ik", "e2e"])
def test_ik_sections_run_or_say_why_not(module):
    section = module.run(TINY)
    if _data.ik_missing():
        assert section.skipped and not section.tables
    else:
        _has_rows(section)


def test_report_renders(tmp_path):
    section = transport.Section("transport", "t")
    text = report.markdown({"transport": section}, {"CPU": "x"}, "python -m benchmarks", [])
    assert "Targets" in text and "not measured" in text
    assert report.machine()["pyzmq / libzmq"]


def _script(*argv: str, timeout: float = 150) -> str:
    """Run a standalone benchmark script as its own process; its markdown output."""
    import subprocess

    done = subprocess.run(
        [sys.executable, "-m", *argv], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.count("|") > 10, done.stdout
    return done.stdout


def test_load_script_runs():
    _script("benchmarks.load", "--seconds", "2", "--overload-seconds", "1", "--clients", "4")


def test_soak_script_runs():
    # Six seconds cannot tell creep from warm-up (the broker's memory of answered requests
    # fills for up to a minute), so this only checks that the script runs: no growth target.
    _script(
        "benchmarks.soak",
        *("--minutes", "0.1", "--warmup", "1", "--sample", "1", "--window", "1"),
        *("--target", "1000"),
    )


def test_control_loop_profiling_scripts_run():
    """benchmarks/loop_stages.py (timestamps per stage in all three processes) and
    path_work.py (each process's Python work per request) patch the code they time by
    name: a rename must break here, not in the next person's hands."""
    if _data.ik_missing():
        pytest.skip(_data.ik_missing() or "")
    assert "whole call" in _script("benchmarks.loop_stages", "--rounds", "1", "--poses", "5")
    assert "total" in _script("benchmarks.path_work")


def test_program_bound_script_runs():
    if _data.ik_missing():
        pytest.skip(_data.ik_missing() or "")
    out = _script("benchmarks.program_bound", "--programs", "2", "--bound", "1", "--no-unbounded")
    assert "max_extra_compiles=1" in out


def test_gpu_check_dry_run_runs(tmp_path):
    """The GPU check's CPU dry run: every step runs and the summary table comes out."""
    pytest.importorskip("jax")
    import subprocess

    out = tmp_path / "gpu_check.md"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu_check", "--dry-run", "--out", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=170,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    text = out.read_text()
    for row in ("engine, batch 16", "worker READY, warm", "single-pose loop", "vs CPU"):
        assert row in text


@pytest.mark.timeout(300)
def test_robot_reach_benchmark_runs():
    """benchmarks/robots.py, one small arm, one bucket: the table's columns are filled."""
    if _data.ik_missing():
        pytest.skip("needs the worker extra")
    from benchmarks import robots

    # bucket 64: the program tests/test_reach.py compiled for this arm (the shared cache)
    rows, _ = robots.run(["so100"], 16, singles=2, buckets=(64,), verbose=False)
    ours = next(r for r in rows if r["method"] == "zmq-ik default")
    assert "error" not in ours, ours
    assert ours["reached %"] == 100 and ours["outside limits %"] == 0
    assert ours["poses/s @1,024"] > 0
    assert "so100" in robots.table(rows).markdown()


def test_control_loop_section_runs():
    """benchmarks/control_loop.py: all three systems, both rest modes, the goal ratios."""
    section = control_loop.run(TINY)
    if _data.ik_missing():
        assert section.skipped and not section.tables
        return
    _has_rows(section)
    assert [row[0] for row in section.tables[0].rows] == ["warm", "ready"]
    for mode in ("warm", "ready"):
        summary = section.data["summary"][mode]
        assert all(summary[f"{s} p50"] > 0 for s in control_loop.SYSTEMS)
        assert summary["compute_ms p50"] > 0  # the worker's compute_ms came back
