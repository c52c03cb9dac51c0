"""URDF parsing and forward kinematics of the IK engine (zmq_ik.ik)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from zmq_ik.errors import InputError
from zmq_ik.robots import BUNDLED

ik = pytest.importorskip("zmq_ik.ik")
TATBOT = BUNDLED["tatbot"]

# base -(fixed, +1 z)-> l0 -(revolute z)-> l1 -(prismatic x, origin +0.5 x)-> l2
#  -(continuous y, origin rpy yaw 90°)-> l3 -(fixed, +0.2 x)-> tip
TINY = """<robot name="tiny">
  <link name="base"/><link name="l0"/><link name="l1"/><link name="l2"/><link name="l3"/>
  <link name="tip"/><link name="elsewhere"/>
  <joint name="mount" type="fixed"><parent link="base"/><child link="l0"/>
    <origin xyz="0 0 1"/></joint>
  <joint name="rev" type="revolute"><parent link="l0"/><child link="l1"/>
    <axis xyz="0 0 1"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
  <joint name="pri" type="prismatic"><parent link="l1"/><child link="l2"/>
    <origin xyz="0.5 0 0"/><axis xyz="1 0 0"/><limit lower="0" upper="0.3" effort="1" velocity="1"/></joint>
  <joint name="cont" type="continuous"><parent link="l2"/><child link="l3"/>
    <origin rpy="0 0 1.5707963267948966"/><axis xyz="0 1 0"/></joint>
  <joint name="tool" type="fixed"><parent link="l3"/><child link="tip"/>
    <origin xyz="0.2 0 0"/></joint>
  <joint name="other" type="floating"><parent link="base"/><child link="elsewhere"/></joint>
</robot>"""


def rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return {
        "x": np.array([[1, 0, 0], [0, c, -s], [0, s, c]]),
        "y": np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]]),
        "z": np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]]),
    }[axis]


def test_tiny_robot_joints_and_limits():
    robot = ik.Robot.from_urdf(TINY, ["tip"])
    assert robot.joint_names == ("rev", "pri", "cont")
    np.testing.assert_allclose(robot.lower, [-2, 0, -math.pi], rtol=1e-6)
    np.testing.assert_allclose(robot.upper, [2, 0.3, math.pi], rtol=1e-6)
    assert robot.limited.tolist() == [True, True, False]


@pytest.mark.parametrize("q", [(0.0, 0.0, 0.0), (0.7, 0.1, -1.2), (-1.9, 0.3, 3.0)])
def test_tiny_robot_fk_matches_hand_computed(q):
    robot = ik.Robot.from_urdf(TINY, ["tip"])
    a, d, b = q
    # Hand-written chain: translate z 1, rotate z by a, translate x (0.5 + d),
    # yaw 90°, rotate y by b, translate x 0.2.
    R1 = rot("z", a)
    p = np.array([0, 0, 1.0]) + R1 @ np.array([0.5 + d, 0, 0])
    R3 = R1 @ rot("z", math.pi / 2) @ rot("y", b)
    p = p + R3 @ np.array([0.2, 0, 0])
    T = robot.fk(np.array([q], np.float32))
    assert T.wxyz_xyz.shape == (1, 1, 7)
    np.testing.assert_allclose(np.asarray(T.translation())[0, 0], p, atol=1e-6)
    np.testing.assert_allclose(np.asarray(T.rotation().as_matrix())[0, 0], R3, atol=1e-6)


def test_fk_batches_over_leading_shape():
    robot = ik.Robot.from_urdf(TINY, ["tip"])
    q = np.random.default_rng(0).uniform(-1, 1, (2, 3, 3)).astype(np.float32) * [1, 0.1, 1]
    T = robot.fk(q)
    assert T.wxyz_xyz.shape == (2, 3, 1, 7)
    np.testing.assert_allclose(
        np.asarray(T.wxyz_xyz)[1, 2, 0], np.asarray(robot.fk(q[1, 2]).wxyz_xyz)[0], atol=1e-6
    )


def test_tatbot_joint_order_and_ready_needles():
    robot = ik.Robot.bundled("tatbot")
    arm = [f"joint_{i}" for i in range(6)]
    assert robot.joint_names == tuple(
        [f"left/{j}" for j in arm]
        + ["left/left_carriage_joint"]
        + [f"right/{j}" for j in arm]
        + ["right/right_carriage_joint"]
    )
    T = robot.fk(np.asarray(TATBOT.rest, np.float32))
    # Computed once in float64 with a plain numpy product of 4x4 URDF transforms
    # (origin = Rz@Ry@Rx(rpy) + xyz, then Rodrigues / axis*q per joint) over the chain
    # root -> left/tattoo_needle, independent of zmq_ik.ik; right mirrors in y.
    left = np.array([0.158887724, 0.058510832, 0.163677544])
    R_left = np.array(
        [
            [0.393113347, 0.919314304, 0.017975158],
            [-0.919168149, 0.393417851, -0.018769865],
            [-0.024327154, -0.009143509, 0.999662236],
        ]
    )
    pos = np.asarray(T.translation())
    np.testing.assert_allclose(pos[0], left, atol=2e-6)
    np.testing.assert_allclose(pos[1], left * [1, -1, 1], atol=2e-6)
    np.testing.assert_allclose(np.asarray(T.rotation().as_matrix())[0], R_left, atol=2e-6)


def test_link_pose_of_fixed_and_moving_links():
    robot = ik.Robot.bundled("tatbot")
    rest = np.asarray(TATBOT.rest, np.float32)
    laser = robot.link_pose("lasercross", rest)
    np.testing.assert_allclose(np.asarray(laser.translation()), [0.25045, 0, 0.102], atol=1e-7)
    needle = robot.link_pose("left/tattoo_needle", rest)
    np.testing.assert_allclose(
        np.asarray(needle.wxyz_xyz), np.asarray(robot.fk(rest).wxyz_xyz)[0], atol=1e-6
    )


BASE = '<robot name="r"><link name="a"/><link name="b"/><link name="c"/>{}</robot>'


@pytest.mark.parametrize(
    ("urdf", "ee", "needle"),
    [
        (TINY, ["nowhere"], "nowhere"),
        (TINY, ["elsewhere"], "is floating, which the IK engine does not support"),
        (TINY, ["elsewhere"], "its child link 'elsewhere' becomes the root"),
        (
            BASE.format(
                '<joint name="j" type="revolute"><parent link="a"/><child link="b"/></joint>'
            ),
            ["b"],
            "'j' has no <limit>",
        ),
        (
            BASE.format(
                '<joint name="j" type="revolut"><parent link="a"/><child link="b"/></joint>'
            ),
            ["b"],
            "unknown type",
        ),
        (
            BASE.format(
                '<joint name="j1" type="fixed"><parent link="a"/><child link="b"/></joint>'
                '<joint name="j2" type="fixed"><parent link="c"/><child link="b"/></joint>'
            ),
            ["b"],
            "several parents",
        ),
        (
            BASE.format(
                '<joint name="j1" type="fixed"><parent link="a"/><child link="b"/></joint>'
                '<joint name="j2" type="fixed"><parent link="b"/><child link="a"/></joint>'
            ),
            ["b"],
            "cycle",
        ),
        (
            BASE.format(
                '<joint name="j" type="fixed"><parent link="a"/><child link="zz"/></joint>'
            ),
            ["b"],
            "unknown child link 'zz'",
        ),
        ("<robot><link", ["b"], "not valid XML"),
        ('<robot name="ur3"><!-- xacro output of nothing --></robot>', ["b"], "no <link>"),
        (  # a xacro file: its links are in macros, its names unexpanded
            '<robot xmlns:xacro="http://www.ros.org/wiki/xacro"><link name="a"/>'
            '<xacro:macro name="arm" params="prefix"><link name="${prefix}b"/></xacro:macro>'
            "</robot>",
            ["b"],
            "a xacro file (<xacro:macro>)",
        ),
        ('<robot><link name="${prefix}a"/></robot>', ["a"], "a xacro file ('${prefix}a' in a"),
        ('<robot><xacro:include filename="x"/></robot>', ["a"], "a xacro file (<xacro:include>)"),
        ("/no/such/file.urdf", ["b"], "cannot read"),
    ],
)
def test_bad_urdf_or_links_raise_input_error(urdf, ee, needle):
    with pytest.raises(InputError) as info:
        ik.Robot.from_urdf(urdf, ee)
    assert needle in str(info.value)


def test_what_urdf_parsers_in_the_wild_accept_loads():
    """What ROS's and Pinocchio's parsers (TinyXML, no namespaces) and Drake accept, seen in
    real files: a prefix never declared (Fetch's ``<sensor:camera>`` in ``<gazebo>``), a
    xacro element left in a generated file (robotis OP2's ``<xacro:grey/>`` in a visual,
    Valkyrie's call of a macro xacro did not know), a default namespace, and (Drake) a
    joint to a "world" link no ``<link>`` declares (TINY raised 2 m)."""
    extras = (
        '<gazebo reference="l1"><sensor:camera name="rgb"/></gazebo>'
        '<link name="shiny"><visual><material name="m"><xacro:grey/></material></visual></link>'
        '<xacro:v1_pelvis_sensors_usb middle_sensor_port_tag="none"/>'
        '<joint name="shiny_mount" type="fixed"><parent link="l1"/><child link="shiny"/></joint>'
        '<joint name="to_world" type="fixed"><parent link="world"/><child link="base"/>'
        '<origin xyz="0 0 2"/></joint>'
    )
    urdf = TINY.replace('<robot name="tiny">', '<robot name="tiny" xmlns="http://x.org/urdf">')
    robot = ik.Robot.from_urdf(urdf.replace("</robot>", extras + "</robot>"), ["tip"])
    assert robot.model.root == "world"
    assert robot.joint_names == ("rev", "pri", "cont")
    np.testing.assert_allclose(
        np.asarray(robot.fk(np.zeros(3)).translation())[0], [0.5, 0.2, 3], atol=1e-6
    )


def test_chains_sharing_joints_are_one_group_with_each_joint_once():
    robot = ik.Robot.from_urdf(TINY, ["tip", "l1"])
    assert robot.joint_names == ("rev", "pri", "cont")
    assert [c.joint_index for c in robot.chains] == [(0, 1, 2), (0,)]
    assert [(g.ee_index, g.joint_index) for g in robot.groups] == [((0, 1), (0, 1, 2))]
    q = np.array([0.7, 0.2, -1.1])
    T = robot.fk(q)
    np.testing.assert_allclose(
        np.asarray(T.translation())[1], [0.0, 0.0, 1.0], atol=1e-6
    )  # l1 sits at the joint "rev", which moves only its rotation
    np.testing.assert_allclose(np.asarray(T.rotation().as_matrix())[1], rot("z", 0.7), atol=1e-6)
    tatbot = ik.Robot.bundled()
    assert [(g.ee_index, g.joint_index) for g in tatbot.groups] == [
        ((0,), tuple(range(7))),
        ((1,), tuple(range(7, 14))),
    ]


# base -(revolute z)-> l1 -(revolute z, mimics "rev" × -2 + 0.1, origin +1 x)-> l2
#  -(fixed, +0.5 x)-> tip; "grip" (prismatic x) -> finger and its mimic "grip2" -> finger2
MIMIC = """<robot name="mimic">
  <link name="base"/><link name="l1"/><link name="l2"/><link name="tip"/>
  <link name="finger"/><link name="finger2"/>
  <joint name="rev" type="revolute"><parent link="base"/><child link="l1"/>
    <axis xyz="0 0 1"/><limit lower="-2" upper="2" effort="1" velocity="1"/></joint>
  <joint name="twin" type="revolute"><parent link="l1"/><child link="l2"/>
    <origin xyz="1 0 0"/><axis xyz="0 0 1"/><limit lower="-9" upper="9" effort="1" velocity="1"/>
    <mimic joint="rev" multiplier="-2" offset="0.1"/></joint>
  <joint name="tool" type="fixed"><parent link="l2"/><child link="tip"/>
    <origin xyz="0.5 0 0"/></joint>
  <joint name="grip" type="prismatic"><parent link="tip"/><child link="finger"/>
    <axis xyz="1 0 0"/><limit lower="0" upper="0.04" effort="1" velocity="1"/></joint>
  <joint name="grip2" type="prismatic"><parent link="tip"/><child link="finger2"/>
    <axis xyz="0 1 0"/><limit lower="0" upper="0.04" effort="1" velocity="1"/>
    <mimic joint="grip"/></joint>
</robot>"""


def test_mimic_joints_follow_the_joint_they_mimic():
    robot = ik.Robot.from_urdf(MIMIC, ["finger", "finger2"])
    assert robot.joint_names == ("rev", "grip")  # a mimic joint is no variable of its own
    assert (robot.lower[0], robot.upper[0]) == (-2, 2)  # its own limits do not count
    q, g = 0.4, 0.03
    T = robot.fk(np.array([q, g], np.float32))
    tip = np.array([math.cos(q), math.sin(q), 0.0]) + 0.5 * np.array(
        [math.cos(0.1 - q), math.sin(0.1 - q), 0.0]
    )
    yaw = rot("z", 0.1 - q)  # the tip's orientation: q + (-2q + 0.1)
    np.testing.assert_allclose(
        np.asarray(T.translation()), [tip + yaw @ [g, 0, 0], tip + yaw @ [0, g, 0]], atol=1e-6
    )
    np.testing.assert_allclose(np.asarray(T.rotation().as_matrix())[0], yaw, atol=1e-6)
    np.testing.assert_allclose(
        np.asarray(robot.link_pose("l2", np.array([q, g])).translation()),
        [math.cos(q), math.sin(q), 0],
        atol=1e-6,
    )


@pytest.mark.parametrize(
    ("old", "new", "needle"),
    [
        ('<mimic joint="rev"', '<mimic joint="nope"', "mimics unknown joint 'nope'"),
        ('<mimic joint="grip"/>', '<mimic joint="rev"/>', "must be of its joint's kind"),
        ('<mimic joint="grip"/>', '<mimic joint="tool"/>', "mimics 'tool', a fixed joint"),
        ('<mimic joint="rev" multiplier', '<mimic joint="twin" multiplier', "in a cycle"),
    ],
)
def test_bad_mimic_joints_are_refused(old, new, needle):
    """On the chain: refused, naming the joint and the chain. Off it (a finger's mimic with
    a xacro prefix missed, as in example-robot-data's alex_psyonic_hands.urdf): the other
    chains still load."""
    assert old in MIMIC
    urdf = MIMIC.replace(old, new)
    broken = "finger2" if "grip" in old else "finger"
    with pytest.raises(InputError, match=needle) as info:
        ik.Robot.from_urdf(urdf, [broken])
    assert f"on the chain to link {broken!r}" in str(info.value)
    if broken == "finger2":
        assert ik.Robot.from_urdf(urdf, ["finger"]).joint_names == ("rev", "grip")


def test_a_malformed_mimic_is_refused_anywhere():
    """Numbers that do not parse are a broken file (urdfdom refuses it too), wherever they
    are, unlike a mimic that names a joint it cannot follow."""
    with pytest.raises(InputError, match="bad numbers in grip2 mimic multiplier"):
        ik.Robot.from_urdf(
            MIMIC.replace('<mimic joint="grip"/>', '<mimic joint="grip" multiplier="x"/>'),
            ["finger"],
        )


def test_byte_order_mark_and_bare_axis(tmp_path):
    """Some editors start files with a UTF-8 byte-order mark; ``<axis/>`` means the URDF
    default axis x. Both as text and as a file."""
    urdf = TINY.replace('<axis xyz="0 0 1"/>', "<axis/>")
    path = tmp_path / "tiny.urdf"
    path.write_text("\ufeff" + urdf, encoding="utf-8")
    for source in ("\ufeff" + urdf, path, str(path)):
        robot = ik.Robot.from_urdf(source, ["tip"])
        rev = robot.chains[0].chain.joints[0]
        assert rev.name == "rev" and rev.axis == (1.0, 0.0, 0.0)


def test_reach_bounds_every_configuration():
    """#24.7: a chain's reach is the sum of its link offsets (fixed joints folded in) and
    prismatic travel: 1 (mount) + 0.5 + 0.3 (travel) + 0.2 (tool) for TINY."""
    robot = ik.Robot.from_urdf(TINY, ["tip"])
    assert robot.reach == pytest.approx((2.0,))
    rng = np.random.default_rng(0)
    q = rng.uniform(robot.lower, robot.upper, (512, robot.n_joints))
    dist = np.linalg.norm(np.asarray(robot.fk(q).translation()), axis=-1)
    assert dist.max() <= robot.reach[0] + 1e-6
    tatbot = ik.Robot.bundled("tatbot")
    assert all(0.3 < r < 2.0 for r in tatbot.reach)


def test_a_chain_with_too_many_joints_is_refused_before_compiling():
    """#24.6: programs are unrolled per joint; a 100-joint chain is refused with the limit."""
    from test_robot_files import chain_urdf

    from zmq_ik.ik._kin import MAX_CHAIN_JOINTS

    with pytest.raises(InputError, match=f"100 actuated joints, more than the {MAX_CHAIN_JOINTS}"):
        ik.Robot.from_urdf(chain_urdf(100), ["l100"])
    assert ik.Robot.from_urdf(chain_urdf(100), ["l50"]).n_joints == 50
