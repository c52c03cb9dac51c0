"""Every benchmark section runs at a tiny size and produces rows, so none of them can rot.

No numbers are asserted: benchmark results are never pass/fail. The HTTP comparison needs
the ``bench`` extra (fastapi, uvicorn, ...) and is skipped without it; the IK sections skip
themselves (with a reason) while the IK engine is unavailable.
"""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

from benchmarks import _data, bench_ik, control_loop, e2e, report, transport
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


@pytest.mark.parametrize("module", [bench_ik, e2e], ids=["ik", "e2e"])
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
