"""Every benchmark section runs at a tiny size and produces rows, so none of them can rot.

No numbers are asserted: benchmark results are never pass/fail. The HTTP comparison needs
the ``bench`` extra (fastapi, uvicorn, ...) and is skipped without it; the IK sections skip
themselves (with a reason) while the IK engine is unavailable.
"""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT

if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks import _data, e2e, ik_engine, report, transport
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
