"""A contact sheet: one row per finding or nuisance, one column per simulated patient."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from simulator.appearance import Split
from simulator.bed import BedSimulation, SimFrame
from simulator.render import Region
from simulator.scenario import parse_scenario

Score = Callable[[SimFrame], float]

PAIN_ROW = "pain: grimace"  # followed by a row of magnified faces

# (row title, episodes, how to pick the most telling frame of the row)
ROWS: list[tuple[str, list[dict[str, Any]], Score]] = [
    ("stable", [], lambda f: -abs(f.t - 5.0)),
    (PAIN_ROW, [{"kind": "pain", "onset_s": 1, "duration_s": 9, "intensity": 1.0, "bout_every_s": 3}],
     lambda f: f.state.grimace),
    ("apnea", [{"kind": "apnea", "onset_s": 1, "duration_s": 10}], lambda f: -abs(f.t - 6.0)),
    ("clonic seizure", [{"kind": "seizure", "onset_s": 1, "duration_s": 9, "intensity": 1.0,
                         "limbs": ["left_arm", "right_arm", "left_leg", "head"]}],
     lambda f: float(np.abs(f.state.jerk).sum())),
    ("agitation", [{"kind": "agitation", "onset_s": 1, "duration_s": 9, "intensity": 1.0}],
     lambda f: float(np.abs(f.state.pose).sum())),
    ("night (IR)", [{"kind": "night_mode", "onset_s": 0, "duration_s": 11, "light": 0.3}], lambda f: -abs(f.t - 7.0)),
    ("walk-through", [{"kind": "walk_through", "onset_s": 1, "duration_s": 8, "linger": 0.5}],
     lambda f: -abs((f.state.walker or 0.0) - 0.45)),
    ("blanket", [{"kind": "blanket_adjustment", "onset_s": 1, "duration_s": 8}], lambda f: f.state.blanket),
    ("head turned", [{"kind": "head_turn", "onset_s": 1, "duration_s": 8, "intensity": 1.0}],
     lambda f: abs(f.state.head_yaw)),
    ("noise + JPEG", [{"kind": "noise", "onset_s": 1, "duration_s": 8, "sigma": 14, "jpeg_quality": 10}],
     lambda f: -abs(f.t - 5.0)),
]  # fmt: skip

PATIENTS: list[tuple[Split, int]] = [("train", 1), ("train", 2), ("train", 3), ("train", 4), ("unseen", 5)]


def _label(image: np.ndarray, text: str) -> None:
    (width, height), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, 0.4, 1)
    cv2.rectangle(image, (0, 0), (width + 8, height + 8), (0, 0, 0), -1)
    cv2.putText(image, text, (4, height + 3), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1, cv2.LINE_AA)


def _best_frame(episodes: list[dict[str, Any]], split: Split, seed: int, score: Score) -> tuple[SimFrame, Region]:
    """The row's most telling frame for one patient, and where that patient's face is."""
    scenario = parse_scenario({"name": "sheet", "duration_s": 12, "episodes": episodes})
    sim = BedSimulation(scenario, seed=seed, split=split)
    best: SimFrame | None = None
    for frame in sim.frames():
        if best is None or score(frame) > score(best):
            # The renderer reuses its output buffer: keep a copy of the frame's pixels.
            best = replace(frame, image=frame.image.copy())
    assert best is not None
    return best, sim.renderer.region("face")


def _face_pair(split: Split, seed: int, grimace: np.ndarray, box: Region) -> np.ndarray:
    """The patient's face calm (first frame of a quiet second) beside the grimace, magnified."""
    calm = next(BedSimulation(parse_scenario({"name": "n", "duration_s": 1}), seed=seed, split=split).frames()).image
    pad = 4
    crops = [
        cv2.resize(image[max(0, box.y0 - pad) : box.y1 + pad, max(0, box.x0 - pad) : box.x1 + pad], (160, 240),
                   interpolation=cv2.INTER_NEAREST)
        for image in (calm, grimace)
    ]  # fmt: skip
    face = np.hstack(crops)
    _label(face, "face: calm | grimace")
    return face


def contact_sheet(out: Path, *, scale: float = 0.5) -> Path:
    """Render the sheet (rows: findings and nuisances; columns: patients, the last from ``unseen``).

    Cells are 320x240 frames; ``scale`` shrinks the whole sheet (noisy frames make big PNGs).
    """
    rows = []
    for title, episodes, score in ROWS:
        cells = []
        faces = []
        for split, seed in PATIENTS:
            frame, face_box = _best_frame(episodes, split, seed, score)
            cell = frame.image.copy()  # the label is drawn on the cell, the face crop needs it clean
            flags = [name for name in ("grimace", "twitch", "apnea") if getattr(frame.truth, name)]
            _label(cell, f"{title} | {split} #{seed} | {' '.join(flags) or 'no finding'}")
            cells.append(cell)
            if title == PAIN_ROW:
                faces.append(_face_pair(split, seed, frame.image, face_box))
        rows.append(np.hstack(cells))
        if faces:
            rows.append(np.hstack(faces))
    sheet = np.vstack(rows)
    if scale != 1.0:
        sheet = cv2.resize(sheet, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    out.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(out), sheet, [cv2.IMWRITE_PNG_COMPRESSION, 9]):
        raise OSError(f"could not write {out}")
    return out
