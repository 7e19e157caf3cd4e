"""Per-patient look: skin, face shape, bedding, camera pose and lighting, drawn from a seed.

Splits share the generator but not the ranges: ``unseen`` draws skin tones, face shapes, blanket
colours and patterns, camera angles and distances and lighting from ranges ``train`` never
contains, so a model's score on ``unseen`` measures generalisation rather than memory.
``val`` and ``test`` use the training ranges with different seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, Literal

import numpy as np

Split = Literal["train", "val", "test", "unseen"]
SPLITS: Final[tuple[Split, ...]] = ("train", "val", "test", "unseen")

BGR = tuple[int, int, int]

# Skin from light to dark (BGR); a tone is a position 0..1 along this curve.
_SKIN_CURVE: Final = np.array(
    [[196, 214, 245], [160, 190, 232], [120, 158, 205], [85, 120, 170], [60, 88, 128], [40, 58, 88]], dtype=float
)
_HAIR: Final = np.array([[30, 30, 35], [40, 60, 90], [70, 110, 150], [160, 170, 180], [20, 25, 60]], dtype=float)

# Blanket hues (BGR) and patterns: the unseen split gets its own.
_BLANKETS_TRAIN: Final = ((200, 170, 120), (190, 200, 205), (150, 180, 150), (210, 210, 215), (170, 150, 190))
_BLANKETS_UNSEEN: Final = ((120, 170, 210), (90, 110, 160))
_PATTERNS_TRAIN: Final = ("plain", "stripes", "checks")
_PATTERNS_UNSEEN: Final = ("dots",)

# (train ranges, unseen ranges) per continuous parameter; unseen never overlaps train.
_RANGES: Final[dict[str, tuple[tuple[tuple[float, float], ...], tuple[tuple[float, float], ...]]]] = {
    "skin_tone": (((0.0, 0.28), (0.38, 0.68), (0.78, 1.0)), ((0.30, 0.36), (0.70, 0.76))),
    "face_aspect": (((0.80, 0.90),), ((0.72, 0.77), (0.93, 0.97))),
    "camera_rotation_deg": (((-12.0, 12.0),), ((-24.0, -16.0), (16.0, 24.0))),
    "camera_scale": (((0.92, 1.10),), ((0.76, 0.86), (1.16, 1.24))),
    "light_gain": (((0.85, 1.15),), ((0.62, 0.75), (1.25, 1.35))),
    "light_warmth": (((-0.05, 0.05),), ((-0.12, -0.08), (0.08, 0.12))),
}


@dataclass(frozen=True, slots=True)
class Appearance:
    """Everything about how one patient and camera look. Colours are BGR (OpenCV order)."""

    skin_tone: float
    skin: BGR
    hair: BGR
    hair_cover: float  # 0..1 how much of the scalp shows hair
    face_aspect: float  # face width / height
    gown: BGR
    blanket: BGR
    blanket_pattern: str
    sheet: BGR
    pillow: BGR
    wall: BGR
    floor: BGR
    bed_frame: BGR
    head_left: bool  # head end of the bed on the image's left
    camera_rotation_deg: float
    camera_scale: float
    camera_shift: tuple[float, float]  # fraction of the frame
    camera_tilt: float  # perspective: -1..1 (foot end nearer or farther)
    light_gain: float
    light_warmth: float  # + warmer (more red), - cooler
    vignette: float
    sensor_noise: float  # grey levels
    breath_px: float  # chest excursion of a normal breath, pixels at 320x240


def _pick_range(rng: np.random.Generator, ranges: tuple[tuple[float, float], ...]) -> float:
    widths = np.array([hi - lo for lo, hi in ranges])
    index = int(rng.choice(len(ranges), p=widths / widths.sum()))
    lo, hi = ranges[index]
    return float(rng.uniform(lo, hi))


def _colour(rng: np.random.Generator, base: tuple[int, int, int] | np.ndarray, spread: float) -> BGR:
    value = np.clip(np.asarray(base, dtype=float) + rng.normal(0, spread, 3), 0, 255)
    return (int(value[0]), int(value[1]), int(value[2]))


def sample_appearance(rng: np.random.Generator, split: Split = "train") -> Appearance:
    """Draw one patient's look for ``split`` (see the module docstring for what ``unseen`` changes)."""
    unseen = split == "unseen"

    def draw(name: str) -> float:
        train, held_out = _RANGES[name]
        return _pick_range(rng, held_out if unseen else train)

    tone = draw("skin_tone")
    position = tone * (len(_SKIN_CURVE) - 1)
    i = min(int(position), len(_SKIN_CURVE) - 2)
    skin = _SKIN_CURVE[i] + (_SKIN_CURVE[i + 1] - _SKIN_CURVE[i]) * (position - i)
    hair = _HAIR[int(rng.integers(len(_HAIR)))]
    blankets = _BLANKETS_UNSEEN if unseen else _BLANKETS_TRAIN
    patterns = _PATTERNS_UNSEEN if unseen else _PATTERNS_TRAIN
    return Appearance(
        skin_tone=tone,
        skin=_colour(rng, skin, 4),
        hair=_colour(rng, hair, 6),
        hair_cover=float(rng.uniform(0.2, 1.0)),
        face_aspect=draw("face_aspect"),
        gown=_colour(rng, (200, 185, 150) if rng.random() < 0.6 else (215, 215, 210), 12),
        blanket=_colour(rng, blankets[int(rng.integers(len(blankets)))], 10),
        blanket_pattern=patterns[int(rng.integers(len(patterns)))],
        sheet=_colour(rng, (232, 234, 236), 6),
        pillow=_colour(rng, (238, 238, 240), 5),
        wall=_colour(rng, (180, 190, 195), 15),
        floor=_colour(rng, (120, 130, 135), 15),
        bed_frame=_colour(rng, (90, 95, 100), 20),
        head_left=bool(rng.random() < 0.5),
        camera_rotation_deg=draw("camera_rotation_deg"),
        camera_scale=draw("camera_scale"),
        camera_shift=(float(rng.uniform(-0.05, 0.05)), float(rng.uniform(-0.05, 0.05))),
        camera_tilt=float(rng.uniform(-0.6, 0.6)),
        light_gain=draw("light_gain"),
        light_warmth=draw("light_warmth"),
        vignette=float(rng.uniform(0.0, 0.35)),
        sensor_noise=float(rng.uniform(1.5, 4.0)),
        breath_px=float(rng.uniform(1.6, 2.6)),
    )


def in_training_ranges(appearance: Appearance) -> bool:
    """True when every range-split parameter lies in the training ranges (used by tests and docs)."""
    for name, (train, _) in _RANGES.items():
        value = getattr(appearance, name)
        if not any(lo <= value <= hi for lo, hi in train):
            return False
    return appearance.blanket_pattern in _PATTERNS_TRAIN
