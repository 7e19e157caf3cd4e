"""Evidence images: a keyframe with the model's spatial attention laid over it.

Pure functions over numpy arrays and JPEG bytes, used by the engine when a finding starts.
"""

from __future__ import annotations

import cv2
import numpy as np

OVERLAY_WEIGHT = 0.45  # how strongly the heat map tints the frame
EVIDENCE_JPEG_QUALITY = 85


def saliency_overlay(image_bgr: np.ndarray, saliency: np.ndarray) -> np.ndarray:
    """``image_bgr`` with ``saliency`` (rows, cols), scaled to its size, as a heat map over it:
    red where the model attended most. The map is normalised to its own maximum, so the
    brightest region is always the most attended one, whatever the absolute weights."""
    if saliency.ndim != 2 or saliency.size == 0:
        raise ValueError(f"saliency must be a non-empty 2D grid, got shape {saliency.shape}")
    height, width = image_bgr.shape[:2]
    heat = cv2.resize(saliency.astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    heat = np.clip(heat, 0.0, None)
    peak = float(heat.max())
    scaled = (heat / peak * 255.0 if peak > 0 else heat).astype(np.uint8)
    colour = cv2.applyColorMap(scaled, cv2.COLORMAP_JET)
    return cv2.addWeighted(image_bgr, 1.0 - OVERLAY_WEIGHT, colour, OVERLAY_WEIGHT, 0.0)


def evidence_jpeg(jpeg: bytes, saliency: np.ndarray) -> bytes | None:
    """The keyframe JPEG with the overlay, re-encoded; None when the keyframe cannot be decoded."""
    image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        return None
    ok, encoded = cv2.imencode(".jpg", saliency_overlay(image, saliency), [cv2.IMWRITE_JPEG_QUALITY,
                                                                          EVIDENCE_JPEG_QUALITY])  # fmt: skip
    return encoded.tobytes() if ok else None
