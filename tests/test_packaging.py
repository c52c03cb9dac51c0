"""Packaging: one `zmq_ik` namespace, robot side without JAX, a wheel with the robot data."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_robot_side_imports_without_jax():
    code = "import sys, zmq_ik, zmq_ik.client, zmq_ik.broker; print('jax' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "False"


def test_cli_help_and_version():
    out = subprocess.run(
        [sys.executable, "-m", "zmq_ik.cli", "--help"], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0
    for command in ("broker", "worker", "ping", "status", "serve", "demo", "compute", "keygen"):
        assert command in out.stdout
    version = subprocess.run(
        [sys.executable, "-m", "zmq_ik.cli", "--version"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    from zmq_ik import __version__

    assert __version__ in version.stdout


@pytest.mark.timeout(300)
def test_wheel_contents(tmp_path):
    pytest.importorskip("build")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--wheel",
            "--no-isolation",
            "--outdir",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=240,
    )
    [wheel] = tmp_path.glob("zmq_ik-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for required in (
        "zmq_ik/__init__.py",
        "zmq_ik/protocol/__init__.py",
        "zmq_ik/broker/__init__.py",
        "zmq_ik/worker/__init__.py",
        "zmq_ik/client/__init__.py",
        "zmq_ik/ik/__init__.py",
        "zmq_ik/robots/tatbot.urdf",
        "zmq_ik/robots/tatbot.LICENSE",
        "zmq_ik/py.typed",
    ):
        assert required in names, required
    top_level = {n.split("/")[0] for n in names}
    assert top_level <= {"zmq_ik"} | {n.split("/")[0] for n in names if ".dist-info" in n}
    # An SPDX license expression (a TOML table is deprecated by setuptools >= 77), with both
    # licence texts: ours and the bundled robot's.
    [metadata] = [n for n in names if n.endswith(".dist-info/METADATA")]
    text = zipfile.ZipFile(wheel).read(metadata).decode()
    assert "License-Expression: MIT" in text
    assert "License-File: LICENSE" in text and "License-File: zmq_ik/robots/tatbot.LICENSE" in text
