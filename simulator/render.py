"""Cheap procedural rendering of a patient in bed, as a wall/ceiling camera sees it.

The scene is drawn in a *canonical* portrait canvas (bed vertical, head at the top, face towards
the camera), then one perspective warp applies the patient's camera pose (angle, distance, tilt,
shake) to give the output frame. What moves is physically placed:

- breathing and leg jerks displace the blanket's texture through one ``cv2.remap`` of the torso
  region (the chest rises, the folds and the sheet's edge move with it);
- the face is redrawn each frame from FACS-like action units (brow lowerer, orbital tightening,
  nose wrinkle, mouth stretch/open) and blinks;
- arms and the head rotate about their joints for twitches and agitation;
- nuisances (a person walking through, a carer's arm, night/IR light, shake, noise, JPEG
  artefacts) act where they would in a real camera.

Canonical units equal output pixels at 320x240 and camera scale 1; other sizes scale everything.
Costs ~1-2 ms per 320x240 frame on one core (``icu bench sim``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final

import cv2
import numpy as np

from simulator.appearance import BGR, Appearance
from simulator.physiology import LIMB_INDEX, BodyState

DESIGN_W: Final = 320
DESIGN_H: Final = 240
# Canonical canvas (portrait, before the camera's 90-degree turn), with margin for zooming out.
CANVAS_W: Final = 336
CANVAS_H: Final = 448
_SHIFT: Final = 4  # cv2 sub-pixel drawing: coordinates in 1/16 px
_ONE: Final = 1 << _SHIFT

# Canonical geometry (centred coordinates, y towards the feet).
HEAD_CENTRE: Final = (0.0, -118.0)
HEAD_RY: Final = 21.0
CHEST_CENTRE: Final = (0.0, -48.0)
BLANKET_TOP: Final = -74.0
REMAP_BOX: Final = (-66.0, -86.0, 66.0, 156.0)  # x0, y0, x1, y1 of the displaced region
ARMS: Final = {
    # shoulder, elbow, hand (canonical); left/right as seen in the canvas
    "left_arm": ((-44.0, -82.0), (-52.0, -34.0), (-38.0, 6.0)),
    "right_arm": ((44.0, -82.0), (52.0, -34.0), (38.0, 6.0)),
}
LEGS: Final = {"left_leg": (-17.0, 92.0), "right_leg": (17.0, 92.0)}

# Regions (canonical boxes) the tests and the contact sheet use to look where a finding acts.
REGIONS: Final = {
    "face": (-17.0, -140.0, 17.0, -97.0),
    "chest": (-40.0, -76.0, 40.0, -20.0),
    "left_arm": (-66.0, -50.0, -26.0, 16.0),
    "right_arm": (26.0, -50.0, 66.0, 16.0),
    "left_leg": (-34.0, 50.0, 0.0, 140.0),
    "right_leg": (0.0, 50.0, 34.0, 140.0),
}

_SCRUBS: Final[tuple[BGR, ...]] = ((150, 110, 40), (120, 140, 60), (170, 120, 100), (60, 60, 70), (190, 170, 160))


def _gauss(x: np.ndarray, y: np.ndarray, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    return np.exp(-(((x - cx) / sx) ** 2) - ((y - cy) / sy) ** 2)


def _shade(colour: BGR, factor: float) -> BGR:
    return (
        int(min(255, colour[0] * factor)),
        int(min(255, colour[1] * factor)),
        int(min(255, colour[2] * factor)),
    )


@dataclass(frozen=True, slots=True)
class Region:
    """An axis-aligned box in output pixels."""

    x0: int
    y0: int
    x1: int
    y1: int

    def slice(self) -> tuple[slice, slice]:
        return slice(self.y0, self.y1), slice(self.x0, self.x1)


class Renderer:
    """Renders :class:`BodyState` s of one patient to BGR ``uint8`` frames of ``width`` x ``height``."""

    def __init__(self, appearance: Appearance, *, width: int = 320, height: int = 240, seed: int = 0) -> None:
        if width < 64 or height < 48:
            raise ValueError(f"frame size {width}x{height} is too small (minimum 64x48)")
        self.appearance = appearance
        self.width = width
        self.height = height
        self.scale = min(width / DESIGN_W, height / DESIGN_H)
        self._rng = np.random.default_rng(seed)
        s = self.scale
        self._cw = round(CANVAS_W * s)
        self._ch = round(CANVAS_H * s)
        self._cx = self._cw / 2
        self._cy = self._ch / 2
        self._camera = self._camera_matrix()
        gain, warm = appearance.light_gain, appearance.light_warmth
        self._day_colour = np.diag([gain * (1 - warm), gain, gain * (1 + warm)])
        self._ir_grey = np.tile(np.array([[0.114, 0.587, 0.299]]) * gain * 1.1, (3, 1))
        self._background = self._draw_background()
        self._canvas = self._background.copy()
        self._init_remap()
        self._init_noise()
        self._frame = np.empty((height, width, 3), np.uint8)

    # --- geometry ---------------------------------------------------------------------------

    def _px(self, x: float, y: float) -> tuple[float, float]:
        return self._cx + x * self.scale, self._cy + y * self.scale

    def _pt(self, x: float, y: float) -> tuple[int, int]:
        px, py = self._px(x, y)
        return round(px * _ONE), round(py * _ONE)

    def _camera_matrix(self) -> np.ndarray:
        a = self.appearance
        angle = math.radians((-90.0 if a.head_left else 90.0) + a.camera_rotation_deg)
        c, sn = math.cos(angle) * a.camera_scale, math.sin(angle) * a.camera_scale
        ox = self.width / 2 + a.camera_shift[0] * self.width
        oy = self.height / 2 + a.camera_shift[1] * self.height
        to_centre = np.array([[1, 0, -self._cx], [0, 1, -self._cy], [0, 0, 1]], dtype=float)
        rotate = np.array([[c, -sn, 0], [sn, c, 0], [0, 0, 1]], dtype=float)
        # Foot end nearer or farther: a mild projective term along the bed axis.
        tilt = a.camera_tilt * 0.0009 / self.scale
        project = np.array([[1, 0, 0], [0, 1, 0], [tilt * math.cos(angle), tilt * math.sin(angle), 1]], dtype=float)
        to_output = np.array([[1, 0, ox], [0, 1, oy], [0, 0, 1]], dtype=float)
        return to_output @ project @ rotate @ to_centre

    def region(self, name: str) -> Region:
        """Output-pixel box around a canonical region (``face``, ``chest``, ``left_arm``, ...)."""
        x0, y0, x1, y1 = REGIONS[name]
        corners = np.array([[self._px(x, y) for x, y in ((x0, y0), (x1, y0), (x1, y1), (x0, y1))]], dtype=np.float32)
        out = cv2.perspectiveTransform(corners, self._camera)[0]
        lo = np.floor(out.min(axis=0)).astype(int)
        hi = np.ceil(out.max(axis=0)).astype(int)
        return Region(max(0, int(lo[0])), max(0, int(lo[1])), min(self.width, int(hi[0])), min(self.height, int(hi[1])))

    # --- static scene -----------------------------------------------------------------------

    def _draw_background(self) -> np.ndarray:
        a, s, rng = self.appearance, self.scale, self._rng
        h, w = self._ch, self._cw
        canvas = np.empty((h, w, 3), np.uint8)
        canvas[:] = a.floor
        texture = cv2.GaussianBlur(rng.normal(0, 6, (h, w)).astype(np.float32), (0, 0), 1.5 * s)
        canvas = np.clip(canvas + texture[..., None], 0, 255).astype(np.uint8)
        # Furniture beside the bed: a bedside cabinet and a monitor trolley.
        side = -1 if rng.random() < 0.5 else 1
        cv2.rectangle(canvas, self._pt(side * 90, -150), self._pt(side * 140, -95), a.wall, -1, cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, self._pt(-side * 95, -60), round(10 * s * _ONE), a.bed_frame, -1, cv2.LINE_AA, _SHIFT)

        def rect(x0: float, y0: float, x1: float, y1: float, colour: BGR) -> None:
            cv2.rectangle(canvas, self._pt(x0, y0), self._pt(x1, y1), colour, -1, cv2.LINE_AA, _SHIFT)

        rect(-70, -158, 70, 158, a.bed_frame)
        rect(-63, -151, 63, 151, a.sheet)
        cv2.ellipse(
            canvas, self._pt(0, -124), (round(46 * s * _ONE), round(22 * s * _ONE)), 0, 0, 360, a.pillow, -1,
            cv2.LINE_AA, _SHIFT,
        )  # fmt: skip
        # Shoulders in the gown, above the blanket.
        cv2.ellipse(
            canvas, self._pt(0, -80), (round(50 * s * _ONE), round(20 * s * _ONE)), 0, 0, 360, a.gown, -1,
            cv2.LINE_AA, _SHIFT,
        )  # fmt: skip
        # Blanket over the body: a soft outline wider at the chest, narrowing to the feet.
        outline = [(-56, BLANKET_TOP), (56, BLANKET_TOP), (58, 20), (50, 148), (-50, 148), (-58, 20)]
        polygon = np.array([self._pt(x, y) for x, y in outline], dtype=np.int32)
        mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(mask, [polygon], 255, cv2.LINE_AA, _SHIFT)
        blanket = self._blanket_texture(h, w)
        # Body relief under the blanket: torso and both legs catch light along their ridges.
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        ux, uy = (xx - self._cx) / s, (yy - self._cy) / s
        relief = (
            0.9 * _gauss(ux, uy, 0, -35, 34, 48)
            + 0.8 * _gauss(ux, uy, -17, 95, 11, 55)
            + 0.8 * _gauss(ux, uy, 17, 95, 11, 55)
        )
        shade = (0.78 + 0.3 * np.clip(relief, 0, 1))[..., None]
        blanket = np.clip(blanket * shade, 0, 255)
        alpha = (mask.astype(np.float32) / 255.0)[..., None]
        canvas = np.asarray(canvas * (1 - alpha) + blanket * alpha).astype(np.uint8)
        # The sheet turned down over the blanket's top edge: a bright band that breathing moves.
        rect(-56, BLANKET_TOP, 56, BLANKET_TOP + 7, _shade(a.sheet, 1.02))
        cv2.line(canvas, self._pt(-56, BLANKET_TOP + 7), self._pt(56, BLANKET_TOP + 7), _shade(a.sheet, 0.7), 1,
                 cv2.LINE_AA, _SHIFT)  # fmt: skip
        if a.vignette > 0:
            r2 = ((xx - self._cx) / (w / 2)) ** 2 + ((yy - self._cy) / (h / 2)) ** 2
            canvas = np.clip(canvas * (1.0 - a.vignette * 0.5 * r2)[..., None], 0, 255).astype(np.uint8)
        return canvas

    def _blanket_texture(self, h: int, w: int) -> np.ndarray:
        a, s, rng = self.appearance, self.scale, self._rng
        base = np.empty((h, w, 3), np.float32)
        base[:] = a.blanket
        dark = np.array(_shade(a.blanket, 0.75), np.float32)
        light = np.array(_shade(a.blanket, 1.15), np.float32)
        yy, xx = np.mgrid[0:h, 0:w]
        period = max(4, round(rng.uniform(7, 12) * s))
        if a.blanket_pattern == "stripes":
            base[(yy // period) % 2 == 0] = dark
        elif a.blanket_pattern == "checks":
            base[((yy // period) + (xx // period)) % 2 == 0] = dark
        elif a.blanket_pattern == "dots":
            base[((yy % period) - period // 2) ** 2 + ((xx % period) - period // 2) ** 2 < (period // 4 + 1) ** 2] = (
                light
            )
        # Weave and folds: every blanket has texture, so the chest's motion shows even on plain cloth.
        weave = cv2.GaussianBlur(rng.normal(0, 10, (h, w)).astype(np.float32), (0, 0), 0.8 * s)
        folds = np.zeros((h, w), np.float32)
        for _ in range(int(rng.integers(6, 11))):
            x0, y0 = rng.uniform(-55, 55), rng.uniform(-70, 145)
            angle = rng.uniform(0, math.pi)
            length = rng.uniform(20, 60)
            x1, y1 = x0 + math.cos(angle) * length, y0 + math.sin(angle) * length
            cv2.line(folds, self._pt(x0, y0), self._pt(x1, y1), float(rng.uniform(-45, 45)), max(1, round(3 * s)),
                     cv2.LINE_AA, _SHIFT)  # fmt: skip
        blurred_folds = cv2.GaussianBlur(folds, (0, 0), 2.0 * s)
        return np.asarray(base + (weave + blurred_folds)[..., None], dtype=np.float32)

    # --- per-frame displacement fields --------------------------------------------------------

    def _init_remap(self) -> None:
        s = self.scale
        x0, y0 = self._px(REMAP_BOX[0], REMAP_BOX[1])
        x1, y1 = self._px(REMAP_BOX[2], REMAP_BOX[3])
        self._remap_box = (int(x0), int(y0), math.ceil(x1), math.ceil(y1))
        bx0, by0, bx1, by1 = self._remap_box
        yy, xx = np.mgrid[by0:by1, bx0:bx1].astype(np.float32)
        self._base_x = xx - bx0
        self._base_y = yy - by0
        ux, uy = (xx - self._cx) / s, (yy - self._cy) / s
        px = self.appearance.breath_px * s
        chest = _gauss(ux, uy, CHEST_CENTRE[0], CHEST_CENTRE[1], 40, 30) + 0.6 * _gauss(ux, uy, 0, -10, 34, 22)
        # The rising chest: pulled towards the head end (the camera looks obliquely) and widened.
        self._breath_field = (
            (-(ux / 45.0) * 0.5 * px * chest).astype(np.float32),
            (0.9 * px * chest).astype(np.float32),
        )
        self._leg_fields = {}
        for name, (lx, ly) in LEGS.items():
            bump = _gauss(ux, uy, lx, ly + 20, 14, 40) * 4.0 * s
            self._leg_fields[LIMB_INDEX[name]] = (
                (-np.sign(lx) * bump).astype(np.float32),
                (0.5 * bump).astype(np.float32),
            )
        body = _gauss(ux, uy, 10, 40, 60, 90) * 10.0 * s
        self._blanket_field = ((-body).astype(np.float32), (0.3 * body).astype(np.float32))
        self._map_x = np.empty_like(self._base_x)
        self._map_y = np.empty_like(self._base_y)

    def _init_noise(self) -> None:
        frame_bytes = self.width * self.height * 3
        count = int(max(4, min(24, 8_000_000 // frame_bytes)))
        self._noise_sigma = 32.0
        self._noise = [
            np.clip(128 + self._rng.normal(0, self._noise_sigma, (self.height, self.width, 3)), 0, 255).astype(np.uint8)
            for _ in range(count)
        ]

    # --- per frame --------------------------------------------------------------------------

    def render(self, state: BodyState) -> np.ndarray:
        """Draw one frame. The returned array is reused by the next call: copy it to keep it."""
        a, s = self.appearance, self.scale
        canvas = self._canvas
        np.copyto(canvas, self._background)

        # Under the blanket: breathing, leg jerks and blanket adjustments move the cloth.
        map_x, map_y = self._map_x, self._map_y
        np.copyto(map_x, self._base_x)
        np.copyto(map_y, self._base_y)
        terms = [(state.breath, self._breath_field)]
        for limb, field in self._leg_fields.items():
            amount = state.jerk[limb] + 0.6 * state.pose[limb]
            if amount:
                terms.append((amount, field))
        if state.blanket:
            terms.append((state.blanket, self._blanket_field))
        for amount, (fx, fy) in terms:
            if amount:
                cv2.scaleAdd(fx, float(amount), map_x, map_x)
                cv2.scaleAdd(fy, float(amount), map_y, map_y)
        bx0, by0, bx1, by1 = self._remap_box
        source = self._background[by0:by1, bx0:bx1]
        cv2.remap(source, map_x, map_y, cv2.INTER_LINEAR, dst=canvas[by0:by1, bx0:bx1], borderMode=cv2.BORDER_REFLECT)

        self._draw_arms(canvas, state)
        self._draw_head(canvas, state)
        if state.blanket > 0.05:
            self._draw_carer_arm(canvas, state.blanket)
        if state.walker is not None:
            self._draw_walker(canvas, state)

        camera = self._camera
        if state.shake != (0.0, 0.0):
            camera = np.array([[1, 0, state.shake[0] * s], [0, 1, state.shake[1] * s], [0, 0, 1]]) @ camera
        frame = self._frame
        cv2.warpPerspective(
            canvas,
            camera,
            (self.width, self.height),
            dst=frame,
            flags=cv2.INTER_LINEAR,
            borderMode=cv2.BORDER_REPLICATE,
        )

        # Light: the patient's room gain and warmth, dimmed and greyed at night (IR cameras).
        colour = self._day_colour
        if state.light != 1.0 or state.infrared > 0:
            colour = self._day_colour * state.light
            if state.infrared > 0:
                colour = (1 - state.infrared) * colour + state.infrared * self._ir_grey * state.light
        cv2.transform(frame, colour, dst=frame)

        sigma = a.sensor_noise + state.noise_sigma + 10.0 * (1.0 - state.light)
        noise = self._noise[int(self._rng.integers(len(self._noise)))]
        k = sigma / self._noise_sigma
        cv2.addWeighted(frame, 1.0, noise, k, -128.0 * k, dst=frame)
        if state.infrared > 0.5:
            # An IR camera is monochrome: its noise is grey too.
            cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR, dst=frame)
        if state.jpeg_quality is not None:
            ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, state.jpeg_quality])
            if ok:
                decoded = cv2.imdecode(data, cv2.IMREAD_COLOR)
                if decoded is not None:
                    np.copyto(frame, decoded)
        return frame

    def _draw_arms(self, canvas: np.ndarray, state: BodyState) -> None:
        a, s = self.appearance, self.scale
        for name, (shoulder, elbow, hand) in ARMS.items():
            limb = LIMB_INDEX[name]
            side = -1.0 if name == "left_arm" else 1.0
            # A jerk flicks the forearm and upper arm outwards; agitation lifts and swings them.
            upper_angle = math.radians(14.0 * state.jerk[limb] + 40.0 * state.pose[limb]) * side
            fore_angle = math.radians(22.0 * state.jerk[limb] + 60.0 * state.pose[limb]) * side
            ex, ey = _rotate(elbow, shoulder, upper_angle)
            hx, hy = _rotate(hand, elbow, upper_angle)
            hx, hy = _rotate((hx, hy), (ex, ey), fore_angle)
            cv2.line(canvas, self._pt(*shoulder), self._pt(ex, ey), a.gown, max(1, round(10 * s)), cv2.LINE_AA, _SHIFT)
            cv2.line(canvas, self._pt(ex, ey), self._pt(hx, hy), a.skin, max(1, round(7 * s)), cv2.LINE_AA, _SHIFT)
            cv2.circle(canvas, self._pt(hx, hy), round(5 * s * _ONE), _shade(a.skin, 0.95), -1, cv2.LINE_AA, _SHIFT)

    def _draw_head(self, canvas: np.ndarray, state: BodyState) -> None:
        a, s = self.appearance, self.scale
        head = LIMB_INDEX["head"]
        jerk = state.jerk[head]
        hx = HEAD_CENTRE[0] + 3.5 * jerk + 8.0 * state.pose[head]
        hy = HEAD_CENTRE[1] + 2.0 * abs(jerk)
        roll = 10.0 * jerk + 12.0 * state.pose[head]
        yaw = max(-1.0, min(1.0, state.head_yaw + 0.3 * state.pose[head]))
        ry = HEAD_RY
        rx = ry * a.face_aspect

        def ell(cx: float, cy: float, ax: float, ay: float, colour: BGR, thickness: int = -1, start: float = 0,
                end: float = 360) -> None:  # fmt: skip
            px, py = _rotate((cx, cy), (hx, hy), math.radians(roll))
            cv2.ellipse(
                canvas, self._pt(px, py), (max(1, round(ax * s * _ONE)), max(1, round(ay * s * _ONE))), roll,
                start, end, colour, thickness, cv2.LINE_AA, _SHIFT,
            )  # fmt: skip

        def line(x0: float, y0: float, x1: float, y1: float, colour: BGR, width: float = 1.0) -> None:
            p0 = _rotate((x0, y0), (hx, hy), math.radians(roll))
            p1 = _rotate((x1, y1), (hx, hy), math.radians(roll))
            cv2.line(canvas, self._pt(*p0), self._pt(*p1), colour, max(1, round(width * s)), cv2.LINE_AA, _SHIFT)

        # Head: hair behind, then the face, which slides sideways and narrows as the head turns.
        ell(hx, hy, rx + 1.5, ry + 1.5, a.hair)
        squeeze = 1.0 - 0.6 * abs(yaw)
        fx = hx + yaw * 0.55 * rx
        hair_line = hy - ry * (0.35 + 0.45 * a.hair_cover) * 0.6
        ell(fx, hy + 1.0, rx * squeeze, ry * 0.93, a.skin)
        ell(hx, hair_line - ry * 0.2, rx * 0.95, ry * 0.45, a.hair, -1, 180, 360)
        if abs(yaw) > 0.3:
            # The back of the head comes into view opposite the face, with the ear at its edge.
            ell(hx - yaw * 0.35 * rx, hy, rx * 0.8 * abs(yaw), ry * 0.95, a.hair)
            ell(hx - math.copysign(0.55 * rx, yaw), hy, 2.5, 5.0, _shade(a.skin, 0.85))
        if abs(yaw) > 0.8:
            return  # face turned away: nothing of it left to see

        e = state.grimace
        blink = state.eye_closure
        skin_dark = _shade(a.skin, 0.62)
        brow_colour = _shade(a.hair, 0.8)

        def fxp(dx: float) -> float:
            return fx + dx * rx * squeeze

        eye_y = hy - 0.12 * ry
        for side in (-1.0, 1.0):
            # AU4 brow lowerer: brows drop and their inner ends pull down and together.
            inner_x, outer_x = fxp(side * (0.14 - 0.05 * e)), fxp(side * 0.62)
            brow_y = eye_y - 0.26 * ry + 0.10 * ry * e
            line(inner_x, brow_y + 0.10 * ry * e, outer_x, brow_y - 0.03 * ry, brow_colour, 1.6)
            # AU6/7 orbital tightening and AU43 closure: the eye narrows to a slit; blinks close it briefly.
            ex = fxp(side * 0.38)
            opening = 0.10 * ry * max(0.0, 1.0 - max(0.95 * e, blink))
            if opening > 0.35:
                ell(ex, eye_y, 0.2 * rx * squeeze, opening, (235, 235, 235))
                ell(ex, eye_y, 0.07 * rx * squeeze + 0.4, min(opening, 0.07 * ry + 0.3), (40, 35, 30))
            else:
                line(ex - 0.2 * rx * squeeze, eye_y, ex + 0.2 * rx * squeeze, eye_y, skin_dark, 1.0)
            if e > 0.15:
                # Crow's feet and a raised cheek under the squeezed eye.
                wrinkle = _shade(a.skin, 1.0 - 0.45 * e)
                line(ex + side * 0.22 * rx, eye_y - 0.05 * ry, ex + side * 0.34 * rx, eye_y - 0.1 * ry, wrinkle, 0.8)
                line(ex + side * 0.22 * rx, eye_y + 0.04 * ry, ex + side * 0.34 * rx, eye_y + 0.09 * ry, wrinkle, 0.8)
                ell(ex, eye_y + 0.16 * ry, 0.18 * rx, 0.05 * ry, wrinkle, 1, 0, 180)
        # Nose, and AU9 nose wrinkle across its bridge.
        line(fx, eye_y + 0.02 * ry, fx, hy + 0.28 * ry, _shade(a.skin, 0.85), 1.0)
        ell(fxp(-0.12), hy + 0.3 * ry, 0.05 * rx, 0.03 * ry, skin_dark)
        ell(fxp(0.12), hy + 0.3 * ry, 0.05 * rx, 0.03 * ry, skin_dark)
        if e > 0.2:
            wrinkle = _shade(a.skin, 1.0 - 0.5 * e)
            for k in (0.0, 0.06):
                line(fxp(-0.1), eye_y + (0.06 + k) * ry, fxp(0.1), eye_y + (0.06 + k) * ry, wrinkle, 0.8)
            # AU10 upper-lip raiser deepens the nasolabial folds.
            for side in (-1.0, 1.0):
                line(fxp(side * 0.16), hy + 0.3 * ry, fxp(side * 0.36), hy + 0.55 * ry, wrinkle, 0.8)
        # AU20/25/27: the mouth stretches wide and opens, showing clenched teeth.
        mouth_y = hy + 0.55 * ry - 0.04 * ry * e
        half_width = 0.28 * rx * (1.0 + 0.5 * e) * squeeze
        opening = 0.03 * ry + 0.16 * ry * e
        lips = (int(a.skin[0] * 0.6), int(a.skin[1] * 0.55), int(min(255, a.skin[2] * 0.8)))
        ell(fx, mouth_y, half_width, opening + 0.6, lips)
        if e > 0.25:
            ell(fx, mouth_y, half_width * 0.85, opening * 0.7, (40, 30, 45))
            line(fx - half_width * 0.7, mouth_y - opening * 0.25, fx + half_width * 0.7, mouth_y - opening * 0.25,
                 (215, 220, 225), 0.9)  # fmt: skip

    def _draw_carer_arm(self, canvas: np.ndarray, level: float) -> None:
        s = self.scale
        reach = 110.0 - 80.0 * level
        sleeve = _SCRUBS[0]
        cv2.line(canvas, self._pt(170, 60), self._pt(reach, 40), sleeve, max(1, round(14 * s)), cv2.LINE_AA, _SHIFT)
        cv2.circle(canvas, self._pt(reach - 4, 40), round(8 * s * _ONE), (150, 170, 200), -1, cv2.LINE_AA, _SHIFT)

    def _draw_walker(self, canvas: np.ndarray, state: BodyState) -> None:
        s = self.scale
        assert state.walker is not None
        progress = state.walker if state.walker_left_to_right else 1.0 - state.walker
        x = -230.0 + 460.0 * progress
        y = -20.0 + 6.0 * math.sin(progress * 40.0)
        colour = _SCRUBS[int(self.appearance.skin_tone * 1000) % len(_SCRUBS)]
        # Seen from above: shoulders, arms swinging and a head, big enough to hide most of the bed.
        cv2.ellipse(canvas, self._pt(x, y), (round(26 * s * _ONE), round(70 * s * _ONE)), 0, 0, 360, colour, -1,
                    cv2.LINE_AA, _SHIFT)  # fmt: skip
        swing = 18.0 * math.sin(progress * 25.0)
        for side in (-1, 1):
            cv2.line(canvas, self._pt(x, y + side * 62), self._pt(x + swing * side, y + side * 95), colour,
                     max(1, round(12 * s)), cv2.LINE_AA, _SHIFT)  # fmt: skip
        cv2.circle(canvas, self._pt(x + 6, y), round(20 * s * _ONE), (40, 45, 60), -1, cv2.LINE_AA, _SHIFT)


def _rotate(point: tuple[float, float], centre: tuple[float, float], angle: float) -> tuple[float, float]:
    c, s = math.cos(angle), math.sin(angle)
    dx, dy = point[0] - centre[0], point[1] - centre[1]
    return centre[0] + c * dx - s * dy, centre[1] + s * dx + c * dy
