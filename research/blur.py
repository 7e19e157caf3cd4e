"""Face blurring of recorded frames, for recordings that leave the care team.

OpenCV 5 wheels ship no Haar cascades and its DNN face detector needs a model file this project
cannot download, so this is not a learned face detector: it hides every **skin-coloured region
big enough to be a face** (chrominance in YCrCb, which is far less sensitive to skin tone than
brightness is), each with a margin, pixelated and then blurred. When a frame has no colour to
go by (infrared night mode, grayscale cameras) or skin-coloured light floods most of it, the
whole frame is blurred. So it errs towards hiding too much: arms, a warm blanket or a whole
frame may be blurred with the face. Blurred frames are for sharing and looking at; replaying
them through the video model gives other detections than the originals.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from research import ResearchError

# Chrominance box of skin in YCrCb (Chai & Ngan 1999), widened a little for dim, warm light.
_CR = (133, 180)
_CB = (77, 130)


@dataclass(frozen=True)
class BlurSettings:
    min_area: float = 0.002  # a region under this share of the frame is not a face
    margin: float = 0.35  # each region's box grows by this share of its size on every side
    flood_share: float = 0.6  # skin-coloured light over this share of the frame: blur all of it
    min_saturation: float = 12.0  # mean HSV saturation under this: no colour to go by, blur all
    block: int = 10  # pixelation block, pixels


def face_boxes(image: np.ndarray, settings: BlurSettings | None = None) -> list[tuple[int, int, int, int]] | None:
    """Boxes (x0, y0, x1, y1) to hide in a BGR frame, or None when the whole frame must be hidden."""
    s = settings or BlurSettings()
    height, width = image.shape[:2]
    hsv = cv2.cvtColor(image, cv2.COLOR_BGR2HSV)
    if float(hsv[..., 1].mean()) < s.min_saturation:
        return None
    ycc = cv2.cvtColor(image, cv2.COLOR_BGR2YCrCb)
    mask = cv2.inRange(ycc, (0, _CR[0], _CB[0]), (255, _CR[1], _CB[1]))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (5, 5))
    mask = cv2.morphologyEx(mask, cv2.MORPH_CLOSE, kernel)
    if float(mask.mean()) / 255.0 > s.flood_share:
        return None
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    boxes = []
    for label in range(1, count):
        x, y, w, h, area = (int(v) for v in stats[label])
        if area < s.min_area * width * height:
            continue
        mx, my = round(w * s.margin), round(h * s.margin)
        boxes.append((max(0, x - mx), max(0, y - my), min(width, x + w + mx), min(height, y + h + my)))
    return boxes


def _hide(region: np.ndarray, block: int) -> np.ndarray:
    h, w = region.shape[:2]
    small = cv2.resize(region, (max(1, w // block), max(1, h // block)), interpolation=cv2.INTER_AREA)
    coarse = cv2.resize(small, (w, h), interpolation=cv2.INTER_NEAREST)
    k = max(3, (min(w, h) // 4) | 1)
    return cv2.GaussianBlur(coarse, (k, k), 0)


def blur_faces(image: np.ndarray, settings: BlurSettings | None = None) -> np.ndarray:
    """A copy of a BGR frame with faces (skin regions) pixelated and blurred; see the module doc."""
    s = settings or BlurSettings()
    boxes = face_boxes(image, s)
    out = image.copy()
    if boxes is None:
        return _hide(out, s.block)
    for x0, y0, x1, y1 in boxes:
        out[y0:y1, x0:x1] = _hide(out[y0:y1, x0:x1], s.block)
    return out


def blur_jpeg(jpeg: bytes, *, quality: int = 85, settings: BlurSettings | None = None) -> bytes:
    """The JPEG with faces blurred, re-encoded at ``quality``."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise ResearchError("a frame could not be decoded as JPEG for blurring")
    ok, encoded = cv2.imencode(".jpg", blur_faces(image, settings), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ResearchError("a blurred frame could not be encoded as JPEG")
    return bytes(encoded.tobytes())
