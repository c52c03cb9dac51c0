"""Data model: StrokeBatch (validation, safetensors files/bytes with tatbot's tensor names,
concat, summary) and IKSolution."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import safetensors.numpy
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from zmq_ik.errors import IKError, InputError
from zmq_ik.model import ERROR_TENSORS, TATBOT_TENSORS, IKSolution, StrokeBatch

FAST = settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
LAST = {"ee_pos_l": 3, "ee_pos_r": 3, "ee_rot_l": 4, "ee_rot_r": 4, "pos_err": 2, "ori_err": 2}


def arrays(b: int, n: int, o: int, j: int = 14, seed: int = 0) -> dict[str, Any]:
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {
        k: rng.normal(size=(b, n, o, d)).astype(np.float32) for k, d in LAST.items()
    }
    out["joints"] = rng.normal(size=(b, n, o, j)).astype(np.float32)
    out["pos_err"] = (np.abs(out["pos_err"]) * 1e-4).astype(np.float32)
    out["ori_err"] = (np.abs(out["ori_err"]) * 1e-3).astype(np.float32)
    return out


def batch(b: int = 2, n: int = 3, o: int = 4, j: int = 14, seed: int = 0) -> StrokeBatch:
    return StrokeBatch(**arrays(b, n, o, j, seed))


def test_tensor_names_are_tatbots() -> None:
    assert TATBOT_TENSORS == ("ee_pos_l", "ee_pos_r", "ee_rot_l", "ee_rot_r", "joints")
    assert ERROR_TENSORS == ("pos_err", "ori_err")


def test_shape_properties() -> None:
    sb = batch(2, 3, 4)
    assert (sb.b, sb.l, sb.o, sb.n_joints, sb.n_poses, len(sb)) == (2, 3, 4, 14, 24, 2)
    assert all(getattr(sb, k).dtype == np.float32 for k in LAST)
    assert not sb.joints.flags.writeable
    sub = sb[1:]
    assert len(sub) == 1 and np.shares_memory(sub.joints, sb.joints)
    with pytest.raises(TypeError):
        sb[0]  # type: ignore[index]
    j = sb.offset_joints(1, 2, 0, 3)
    np.testing.assert_array_equal(j[:7], sb.joints[1, 2, 0, :7])
    np.testing.assert_array_equal(j[7:], sb.joints[1, 2, 3, 7:])


def test_float64_input_is_cast_and_float32_not_copied() -> None:
    a = arrays(1, 2, 3)
    sb = StrokeBatch(**a)
    assert np.shares_memory(sb.joints, a["joints"])
    a64 = {k: v.astype(np.float64) for k, v in a.items()}
    sb64 = StrokeBatch(**a64)
    assert sb64.joints.dtype == np.float32 and sb64 == sb


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ee_pos_l", np.zeros((2, 3, 4, 4), np.float32)),
        ("ee_pos_r", np.zeros((2, 3, 5, 3), np.float32)),
        ("ee_rot_l", np.zeros((2, 3, 4, 3), np.float32)),
        ("ee_rot_r", np.zeros((1, 3, 4, 4), np.float32)),
        ("joints", np.zeros((2, 3, 4), np.float32)),
        ("joints", np.zeros((2, 3, 4, 0), np.float32)),
        ("joints", np.full((2, 3, 4, 14), np.nan, np.float32)),
        ("ee_pos_l", np.full((2, 3, 4, 3), np.inf, np.float32)),
        ("pos_err", np.zeros((2, 3, 4, 1), np.float32)),
        ("pos_err", np.full((2, 3, 4, 2), -1.0, np.float32)),
        ("ori_err", np.full((2, 3, 4, 2), np.inf, np.float32)),
        ("ori_err", np.zeros((2, 3, 4, 2), np.bool_)),
    ],
)
def test_validation_names_field(name: str, value: np.ndarray) -> None:
    a: dict[str, Any] = arrays(2, 3, 4)
    a[name] = value
    with pytest.raises(InputError) as err:
        StrokeBatch(**a)
    assert err.value.field == name


def test_nan_errors_mean_unknown() -> None:
    a = arrays(1, 2, 2)
    a["pos_err"][:] = np.nan
    sb = StrokeBatch(**a)
    s = sb.summary()
    assert np.isnan(s["pos_err_median"]) and np.isnan(s["pos_err_max"])
    assert s["n_unknown"] == 4 and s["n_pos_over"] == 0
    assert sb == StrokeBatch(**a)  # NaN == NaN for equality


# ---------------------------------------------------------------------------------------------
# safetensors
# ---------------------------------------------------------------------------------------------

dims = st.tuples(st.integers(0, 3), st.integers(0, 4), st.integers(0, 3), st.integers(1, 14))


@FAST
@given(dims, st.integers(0, 2**16))
def test_save_load_bytes_roundtrip(tmp_path: Path, d: tuple[int, int, int, int], seed: int) -> None:
    sb = batch(*d, seed=seed)
    path = tmp_path / "batch.safetensors"
    sb.save(path, errors=True)
    assert StrokeBatch.load(path) == sb
    data = sb.to_bytes(errors=True)
    assert StrokeBatch.from_bytes(data) == sb
    assert StrokeBatch.from_bytes(memoryview(data)) == sb
    assert set(safetensors.numpy.load(data)) == set(TATBOT_TENSORS + ERROR_TENSORS)


TATBOT_STROKEBATCH_FIELDS = {"ee_pos_l", "ee_pos_r", "ee_rot_l", "ee_rot_r", "joints"}
"""hu-po/tatbot's ``StrokeBatch`` dataclass fields (src/tatbot/data/stroke.py); its ``load``
is ``cls(**load_file(path))``, so a file must hold exactly these tensors."""


def test_default_file_is_exactly_what_tatbots_loader_takes(tmp_path: Path) -> None:
    """#18.4. Before: ``save()`` wrote pos_err/ori_err by default, which tatbot's loader
    refuses (``cls(**data)``), while the README said tatbot reads it; the CLI wrote the
    opposite. Now the default is tatbot's tensors everywhere; errors are opt-in."""
    sb = batch()
    sb.save(tmp_path / "default.safetensors")
    sb.save(tmp_path / "errors.safetensors", errors=True)
    plain = safetensors.numpy.load_file(str(tmp_path / "default.safetensors"))
    full = safetensors.numpy.load_file(str(tmp_path / "errors.safetensors"))
    assert set(plain) == TATBOT_STROKEBATCH_FIELDS == set(TATBOT_TENSORS)
    assert set(safetensors.numpy.load(sb.to_bytes())) == TATBOT_STROKEBATCH_FIELDS
    assert set(full) == TATBOT_STROKEBATCH_FIELDS | set(ERROR_TENSORS)
    assert all(v.dtype == np.float32 for v in full.values())
    np.testing.assert_array_equal(plain["joints"], sb.joints)

    @dataclass
    class TatbotStrokeBatch:  # its loader: cls(**load_file(path))
        ee_pos_l: Any
        ee_pos_r: Any
        ee_rot_l: Any
        ee_rot_r: Any
        joints: Any

    TatbotStrokeBatch(**plain)
    with pytest.raises(TypeError, match=r"pos_err|ori_err"):
        TatbotStrokeBatch(**full)


def test_reads_tatbot_files(tmp_path: Path) -> None:
    a = arrays(2, 3, 4)
    tatbot = {k: a[k] for k in TATBOT_TENSORS}
    path = tmp_path / "tatbot.safetensors"
    safetensors.numpy.save_file(tatbot, str(path))
    sb = StrokeBatch.load(path)
    np.testing.assert_array_equal(sb.joints, a["joints"])
    assert sb.pos_err.shape == (2, 3, 4, 2) and np.isnan(sb.pos_err).all()
    assert np.isnan(sb.ori_err).all()
    # extra tensors are ignored; float64 is cast
    extra = {k: v.astype(np.float64) for k, v in a.items()} | {"note": np.zeros(3)}
    safetensors.numpy.save_file(extra, str(path))
    assert StrokeBatch.load(path) == StrokeBatch(**a)


def test_bad_files(tmp_path: Path) -> None:
    path = tmp_path / "x.safetensors"
    with pytest.raises(InputError, match="not found"):
        StrokeBatch.load(path)
    a = arrays(1, 2, 3)
    safetensors.numpy.save_file({k: a[k] for k in TATBOT_TENSORS[:-1]}, str(path))
    with pytest.raises(InputError) as err:
        StrokeBatch.load(path)
    assert err.value.field == "joints" and str(path) in str(err.value)
    bad = {k: a[k] for k in TATBOT_TENSORS} | {"ee_rot_l": np.zeros((1, 2, 3, 3), np.float32)}
    safetensors.numpy.save_file(bad, str(path))
    with pytest.raises(InputError) as err:
        StrokeBatch.load(path)
    assert err.value.field == "ee_rot_l" and str(path) in str(err.value)
    ints = {k: a[k] for k in TATBOT_TENSORS} | {"joints": np.zeros((1, 2, 3, 14), np.int32)}
    safetensors.numpy.save_file(ints, str(path))
    with pytest.raises(InputError) as err:
        StrokeBatch.load(path)
    assert err.value.field == "joints"
    path.write_bytes(b"\x00garbage")
    with pytest.raises(InputError, match="safetensors"):
        StrokeBatch.load(path)
    with pytest.raises(InputError, match="safetensors"):
        StrokeBatch.from_bytes(b"garbage bytes")


# ---------------------------------------------------------------------------------------------
# concat / summary
# ---------------------------------------------------------------------------------------------


def test_concat() -> None:
    parts = [batch(2, seed=1), batch(0, seed=2), batch(3, seed=3)]
    whole = StrokeBatch.concat(parts)
    assert len(whole) == 5
    np.testing.assert_array_equal(whole.joints[:2], parts[0].joints)
    np.testing.assert_array_equal(whole.ori_err[2:], parts[2].ori_err)
    assert whole[0:2] == parts[0] and whole[2:] == parts[2]
    assert StrokeBatch.concat(iter([parts[0]])) is parts[0]
    with pytest.raises(InputError) as err:
        StrokeBatch.concat([])
    assert err.value.field == "batches"
    with pytest.raises(InputError) as err:
        StrokeBatch.concat([batch(1), batch(1, o=5)])
    assert err.value.field == "batches[1]"
    with pytest.raises(InputError) as err:
        StrokeBatch.concat([batch(1), "x"])  # type: ignore[list-item]
    assert err.value.field == "batches[1]"


def test_summary() -> None:
    a = arrays(1, 2, 2)
    a["pos_err"][:] = 1e-5
    a["ori_err"][:] = 1e-4
    a["pos_err"][0, 0, 0, 1] = 2e-3  # one pose over position tolerance
    a["ori_err"][0, 1, 1, 0] = 0.5  # another over orientation tolerance
    s = StrokeBatch(**a).summary(pos_tol=1e-4, ori_tol=1e-3)
    assert s["n_poses"] == 4
    assert s["pos_err_max"] == pytest.approx(2e-3) and s["pos_err_median"] == pytest.approx(1e-5)
    assert s["ori_err_max"] == pytest.approx(0.5) and s["ori_err_median"] == pytest.approx(1e-4)
    assert (s["n_pos_over"], s["n_ori_over"], s["n_over"], s["n_unknown"]) == (1, 1, 2, 0)
    empty = batch(0).summary()
    assert empty["n_poses"] == 0 and np.isnan(empty["pos_err_median"])
    with pytest.raises(InputError):
        batch().summary(pos_tol=-1.0)


# ---------------------------------------------------------------------------------------------
# IKSolution
# ---------------------------------------------------------------------------------------------


def test_ik_solution() -> None:
    sol = IKSolution(
        joints=np.zeros((5, 14), np.float32),
        pos_err=np.zeros((5, 2), np.float32),
        ori_err=np.full((5, 2), np.nan),
    )
    assert len(sol) == 5 and sol.n_joints == 14 and sol.n_ee == 2
    assert sol.ori_err.dtype == np.float32
    assert sol == IKSolution(sol.joints, sol.pos_err, sol.ori_err)
    empty = IKSolution(np.zeros((0, 7)), np.zeros((0, 1)), np.zeros((0, 1)))
    assert len(empty) == 0


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"joints": np.zeros(5)}, "joints"),
        ({"joints": np.full((5, 14), np.nan)}, "joints"),
        ({"pos_err": np.zeros((4, 2))}, "pos_err"),
        ({"pos_err": -np.ones((5, 2))}, "pos_err"),
        ({"ori_err": np.zeros((5, 3))}, "ori_err"),
        ({"ori_err": np.full((5, 2), np.inf)}, "ori_err"),
    ],
)
def test_ik_solution_validation(kwargs: dict[str, Any], field: str) -> None:
    base: dict[str, Any] = {
        "joints": np.zeros((5, 14)),
        "pos_err": np.zeros((5, 2)),
        "ori_err": np.zeros((5, 2)),
    }
    base.update(kwargs)
    with pytest.raises(InputError) as err:
        IKSolution(**base)
    assert err.value.field == field


# ---------------------------------------------------------------------------------------------
# #23.2 misses are explicit: reached, n_over, strict
# ---------------------------------------------------------------------------------------------


def _judged_errors(n: int) -> tuple[np.ndarray, np.ndarray, list[bool]]:
    """(n >= 6, 2) errors and whether each pose is reached: 0 and 1 within, 2 position over
    on one arm, 3 orientation over, 4 position unknown, 5 orientation unknown, 6+ within."""
    from zmq_ik.model import ORI_TOL, POS_TOL

    pos = np.full((n, 2), POS_TOL / 2, np.float32)
    ori = np.full((n, 2), ORI_TOL / 2, np.float32)
    pos[2, 1] = 2e-4
    ori[3, 0] = 0.3
    pos[4, 0] = np.nan
    ori[5, 1] = np.nan
    return pos, ori, [True, True] + [False] * 4 + [True] * (n - 6)


@pytest.mark.parametrize("n", [8, 200])  # 8 x 2 errors: judged in Python; 200 x 2: numpy
def test_reached_is_every_error_within_its_tolerance_and_nan_is_a_miss(n: int) -> None:
    from zmq_ik.base.checks import SMALL

    pos, ori, expected = _judged_errors(n)
    assert (pos.size <= SMALL) == (n == 8)
    sol = IKSolution(np.zeros((n, 14)), pos, ori)
    assert sol.reached.dtype == np.bool_ and sol.reached.shape == (n,)
    assert sol.reached.tolist() == expected
    assert sol.n_over == expected.count(False) and isinstance(sol.n_over, int)
    assert not sol.reached.flags.writeable
    assert f"n_over={sol.n_over}" in repr(sol)
    trusted = IKSolution.trusted(sol.joints, sol.pos_err, sol.ori_err)
    assert trusted.reached.tolist() == expected and trusted == sol
    with pytest.raises(IKError, match=f"{sol.n_over} of {n} poses miss tolerance") as info:
        sol.require_reached()
    assert "worst pos_err 0.0002 m (pos_tol 0.0001)" in str(info.value)
    assert "ori_err 0.3 rad (ori_tol 0.05), 2 with an unknown (NaN) error" in str(info.value)


def test_tolerances_judge_reached_and_are_checked_as_compute_checks_them() -> None:
    pos, ori, _ = _judged_errors(8)
    loose = IKSolution(np.zeros((8, 14)), pos, ori, pos_tol=1e-3, ori_tol=0.5)
    assert loose.reached.tolist() == [True] * 4 + [False, False] + [True] * 2
    assert loose.n_over == 2 and loose != IKSolution(loose.joints, pos, ori)
    at = IKSolution(np.zeros((3, 14)), np.zeros((3, 2)), np.zeros((3, 2)), pos_tol=0.0)
    at.require_reached()  # every error at its tolerance (0 <= 0): reached, nothing raised
    assert at.n_over == 0 and "n_over=0" in repr(at)
    empty = IKSolution(np.zeros((0, 7)), np.zeros((0, 1)), np.zeros((0, 1)))
    assert empty.reached.shape == (0,) and empty.n_over == 0
    for kwargs, field, words in (
        ({"pos_tol": 0.1}, "pos_tol", "metres"),  # 0.1 "mm" typed as metres
        ({"pos_tol": -1e-4}, "pos_tol", ">= 0"),
        ({"ori_tol": float("nan")}, "ori_tol", "finite"),
        ({"ori_tol": 4.0}, "ori_tol", "radians"),
        ({"ori_tol": True}, "ori_tol", "number"),
    ):
        with pytest.raises(InputError, match=words) as info:
            IKSolution(np.zeros((1, 7)), np.zeros((1, 1)), np.zeros((1, 1)), **kwargs)
        assert info.value.field == field
        with pytest.raises(InputError, match=words) as info:
            StrokeBatch(**arrays(1, 1, 1)).summary(**kwargs)  # the very same check
        assert info.value.field == field


def test_check_judging_refuses_what_compute_refuses_and_keeps_the_defaults() -> None:
    from zmq_ik.model import ORI_TOL, POS_TOL
    from zmq_ik.model.solution import check_judging

    assert check_judging(POS_TOL, ORI_TOL, False) == (POS_TOL, ORI_TOL, False)
    assert check_judging(1e-3, 0.5, True) == (1e-3, 0.5, True)
    for args, field in (((0.1, 0.05, False), "pos_tol"), ((1e-4, 0.05, "yes"), "strict")):
        with pytest.raises(InputError) as info:
            check_judging(*args)
        assert info.value.field == field


# ---------------------------------------------------------------------------------------------
# #18.7 tolerances, #18.13 reprs and help()
# ---------------------------------------------------------------------------------------------


def test_summary_judges_with_the_scene_defaults_and_rest_arms_are_not_unknown() -> None:
    """One set of defaults (POS_TOL m, ORI_TOL rad, a default Scene's); an arm with NaN
    errors beside a judged one rests (no target), a pose with no known error is unknown."""
    from zmq_ik.model import ORI_TOL, POS_TOL, Scene

    assert (Scene().pos_tol, Scene().ori_tol) == (POS_TOL, ORI_TOL) == (1e-4, 0.05)
    a = arrays(2, 2, 1)
    a["pos_err"][:] = 5e-5  # the bundled example's default-mode figures: within
    a["ori_err"][:] = 0.02
    a["pos_err"][0, :, :, 1] = a["ori_err"][0, :, :, 1] = np.nan  # right arm rests
    a["pos_err"][1, 1] = a["ori_err"][1, 1] = np.nan  # no error known at all
    s = StrokeBatch(**a).summary()
    assert (s["pos_tol"], s["ori_tol"]) == (POS_TOL, ORI_TOL)
    assert (s["n_over"], s["n_unknown"]) == (0, 1)
    with pytest.raises(InputError, match="metres"):
        StrokeBatch(**a).summary(pos_tol=0.1)  # 0.1 "mm" typed as metres is refused


def test_reprs_are_short_and_say_shapes() -> None:
    """Before: print(strokebatch) dumped every array (~1,650 lines for the example)."""
    sb = batch(36, 16, 6)
    text = repr(sb)
    assert len(text.splitlines()) == 1 and len(text) < 150, text
    assert "b=36, l=16, o=6, n_ee=2, n_joints=14" in text and "(36, 16, 6, 14)" in text
    sol = IKSolution(np.zeros((500, 14)), np.full((500, 2), 1e-5), np.full((500, 2), 2e-3))
    text = repr(sol)
    assert len(text) < 150 and "N=500, n_joints=14, n_ee=2" in text and "0.002 rad" in text


def test_help_shows_field_docs() -> None:
    """Before: help(IKSolution) showed no field docs (attribute docstrings are invisible to
    help()); now they are the class docstring's Attributes section."""
    import pydoc

    for cls, field, words in (
        (IKSolution, "pos_err", "achieved position error per end effector, metres"),
        (StrokeBatch, "joints", "joint solution in URDF units"),
    ):
        text = " ".join(pydoc.render_doc(cls, renderer=pydoc.plaintext).split())
        assert "Attributes:" in text and f"{field}: " in text and words in text, cls
