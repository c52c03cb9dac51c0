"""Robot files are bounded (#24.6): one reader for every robot file (``--robot``,
``--config``, bundled robots, `Robot.from_urdf`) that takes regular files only, within a
size limit; parsing linear in the file's size; link and joint counts bounded with a clear
error; unknown links answered with the closest names. No JAX needed."""

from __future__ import annotations

import json
import os
import time

import pytest

from zmq_ik.errors import InputError
from zmq_ik.robots import BUNDLED
from zmq_ik.robots import urdf as _urdf
from zmq_ik.settings.worker import ServiceSettings, parse_robots

pytestmark = pytest.mark.timeout(120)


def chain_urdf(n: int) -> str:
    """One chain of ``n`` revolute joints, 1 cm apart."""
    parts = ['<robot name="long">', '<link name="l0"/>']
    for i in range(n):
        parts.append(f'<link name="l{i + 1}"/>')
        parts.append(
            f'<joint name="j{i}" type="revolute"><parent link="l{i}"/><child link="l{i + 1}"/>'
            f'<origin xyz="0 0 0.01"/><axis xyz="0 {i % 2} {1 - i % 2}"/>'
            '<limit lower="-1" upper="1" effort="1" velocity="1"/></joint>'
        )
    parts.append("</robot>")
    return "\n".join(parts)


def test_a_long_chain_loads_in_linear_time(tmp_path, monkeypatch):
    """A 20,000-joint chain (3.6 MB) with the count limit lifted: parsed and walked to its
    tip in seconds (checking for cycles by walking every link to the root took ~200 M steps
    here, minutes)."""
    monkeypatch.setattr(_urdf, "MAX_URDF_ELEMENTS", 10**6)
    path = tmp_path / "long.urdf"
    path.write_text(chain_urdf(20_000))
    t0 = time.perf_counter()
    model = _urdf.parse_urdf(path)
    assert len(model.path_to("l20000")) == 20_000
    assert time.perf_counter() - t0 < 10


def test_too_many_joints_or_links_are_refused_with_the_limit(tmp_path):
    path = tmp_path / "long.urdf"
    path.write_text(chain_urdf(_urdf.MAX_URDF_ELEMENTS + 1))
    with pytest.raises(InputError, match=rf"more than the {_urdf.MAX_URDF_ELEMENTS}") as info:
        _urdf.parse_urdf(path)
    assert info.value.field == "urdf" and str(path) in info.value.message
    _urdf.parse_urdf(chain_urdf(_urdf.MAX_URDF_ELEMENTS - 1))  # at the limit: loads


def test_only_regular_files_within_the_size_limit_are_read(tmp_path, monkeypatch):
    fifo = tmp_path / "robot.fifo"
    os.mkfifo(fifo)  # opening it for reading would block until a writer comes
    for path, kind in ((fifo, "a FIFO"), ("/dev/zero", "a character device"), (tmp_path, "dir")):
        t0 = time.monotonic()
        with pytest.raises(InputError, match="not a regular file") as info:
            _urdf.parse_urdf(path)
        assert kind[:3] in info.value.message and time.monotonic() - t0 < 5
        with pytest.raises(InputError, match="not a regular file"):
            _urdf.check_urdf_file(path)
    big = tmp_path / "big.urdf"
    big.write_text(chain_urdf(50))
    monkeypatch.setattr(_urdf, "MAX_URDF_BYTES", 1000)
    for check in (_urdf.parse_urdf, _urdf.check_urdf_file):
        with pytest.raises(InputError, match=r"over the 0\.000953674 MiB limit"):
            check(big)
    with pytest.raises(InputError, match="limit"):
        _urdf.parse_urdf(chain_urdf(50))  # XML text: the same limit
    with pytest.raises(InputError, match="URDF file not found"):
        _urdf.check_urdf_file(tmp_path / "missing.urdf")


def test_robot_option_config_and_bundled_robots_share_the_checks(tmp_path):
    """``--robot`` (parse_robots), ``--config`` (ServiceSettings from JSON) and a config
    file itself: the same refusals; the bundled robot's file passes them."""
    fifo = tmp_path / "robot.fifo"
    os.mkfifo(fifo)
    for urdf in (str(fifo), "/dev/zero"):
        with pytest.raises(InputError, match="not a regular file") as info:
            parse_robots([f"r={urdf}"])
        assert info.value.field == "robots"
        with pytest.raises(InputError, match="not a regular file") as info:
            ServiceSettings.from_json(json.dumps({"robots": {"r": urdf}}))
        assert info.value.field == "robots"
    with pytest.raises(InputError, match="not a regular file") as info:
        ServiceSettings.from_json(str(fifo))  # --config FIFO: refused, not waited on
    assert info.value.field == "config"
    tatbot = str(BUNDLED["tatbot"].urdf_path)
    assert parse_robots([f"tatbot={tatbot}"]) == {"tatbot": tatbot}
    assert ServiceSettings.from_json(json.dumps({"robots": {"t": tatbot}})).robots == {"t": tatbot}
    assert _urdf.check_urdf_file(tatbot) == tatbot


def test_unknown_link_suggests_the_closest_names():
    model = _urdf.parse_urdf(BUNDLED["tatbot"].urdf_path)
    with pytest.raises(InputError) as info:
        model.path_to("left/tatoo_needle")
    assert "did you mean 'left/tattoo_needle'" in info.value.message
    assert info.value.field == "ee_links"
    with pytest.raises(InputError, match=r"no link named 'zzz' \(links include"):
        model.path_to("zzz")
