"""The other spellings a scene file may use, so that tatbot's files and older zmq-ik files load
unchanged: the two-arm keys (``ready_l``, ``ee_rot_r``...), tatbot's names for the same fields,
its design-pose form, its wrapped arrays and the keys it writes that name other config files."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

TWO_ARM_KEYS: dict[str, tuple[str, int]] = {
    "ready_l": ("ready", 0),
    "ready_r": ("ready", 1),
    "ee_rot_l": ("ee_rot", 0),
    "ee_rot_r": ("ee_rot", 1),
    "ee_offset_l": ("ee_offset", 0),
    "ee_offset_r": ("ee_offset", 1),
}
"""A two-arm scene's spellings (tatbot's, and this file format's before any number of end
effectors): ``X_l``/``X_r`` is row 0/1 of ``X`` (of ``ready``: its first/second half)."""

# tatbot-style spellings accepted by Scene.from_dict / from_yaml.
SCENE_ALIASES: dict[str, str] = {
    "ready_pos_l": "ready_l",
    "ready_pos_r": "ready_r",
    "ee_link_names": "ee_links",
    "lasercross_pos": "design_pos",
    "lasercross_wxyz": "design_wxyz",
    "lasercross_rot": "design_wxyz",
    "design_rot": "design_wxyz",
    "robot_name": "robot",
}
POSE_KEYS = ("lasercross_pose", "design_pose")
"""tatbot-style keys holding the design pose as ``{pos: {xyz}, rot: {wxyz}}``."""
# tatbot scene keys that name other config files; accepted and ignored.
TATBOT_IGNORED = frozenset(
    {
        "arms_config_name",
        "cams_config_name",
        "urdf_config_name",
        "skin_config_name",
        "inks_config_name",
        "tags_config_name",
        "sleep_pos_l_name",
        "sleep_pos_r_name",
        "ready_pos_l_name",
        "ready_pos_r_name",
        "inkready_pos_l_name",
        "inkready_pos_r_name",
        "pen_names_l",
        "pen_names_r",
        "pens_config_path",
        "design_dir_path",
        "design_img_path",
        "yaml_dir",
    }
)


def unwrap(value: Any) -> Any:
    """tatbot wraps arrays as ``{xyz: ...}``, ``{wxyz: ...}``, ``{joints: ...}`` or ``{data: ...}``."""
    if isinstance(value, Mapping) and len(value) == 1:
        (key,) = value
        if key in ("xyz", "wxyz", "joints", "data"):
            return unwrap(value[key])
    return value
