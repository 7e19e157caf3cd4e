"""The grimace detector: a small fully convolutional network over the whole frame at camera
resolution (320x240 greyscale), each frame scored by a smooth maximum over its positions.

Why a second network beside the temporal model: at the temporal model's 128x96 input a face is
about 14 pixels across and a grimace (brows down, eyes squeezed, mouth stretched open) changes a
handful of them; its grimace F1 stayed at 0.4 or below in both variants trained. At 320x240 the face
is about 35 pixels across and the expression is plain to see.

The network is not told where the face is. Each position of its output map scores the square of
44 pixels around it, and the frame's logit is the log-mean-exp of the map (a maximum that
still passes gradient to every position): multiple-instance learning from per-frame labels
alone, which is what a hospital's own annotated video has. The map's peak is where it saw the
grimace.

A model file carries it beside the temporal model (``model.pt`` key ``"grimace"``); when it is
there, it gives the grimace probability of every frame and the temporal model's own grimace head
is not used. ``icu train-grimace`` trains it and stores it there.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol, TypeVar

import cv2
import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F


class FrameSize(Protocol):
    """A detector's input size: both detectors read greyscale frames of one size."""

    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...


@dataclass(frozen=True)
class GrimaceConfig:
    width: int = 320
    height: int = 240
    channels: tuple[int, int, int] = (16, 32, 32)  # 4x4 patches, a stride-2 stage, two more convolutions

    def __post_init__(self) -> None:
        check_body("grimace", self.width, self.height, self.channels)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GrimaceConfig:
        return cls(int(data["width"]), int(data["height"]), tuple(int(c) for c in data["channels"]))  # type: ignore[arg-type]


def _stage(inputs: int, outputs: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(inputs, outputs, 3, stride, 1, bias=False), nn.BatchNorm2d(outputs), nn.GELU())


def check_body(detector: str, width: int, height: int, channels: tuple[int, ...]) -> None:
    """What :func:`detector_body` needs of a detector's input size and widths; the message names
    the detector."""
    if width % 8 or height % 8 or width < 64 or height < 48:
        raise ValueError(f"{detector} input {width}x{height}: both multiples of 8, at least 64x48")
    if len(channels) != 3 or min(channels) < 1:
        raise ValueError(f"{detector} channels {channels}: three positive widths")


def detector_body(inputs: int, channels: tuple[int, int, int]) -> nn.Sequential:
    """The detectors' body (grimace, twitch): 4x4 patches (cheap at camera resolution), a stride-2
    stage and two more convolutions, so each position of the map it gives (H/8, W/8) sees a
    44-pixel square of the input's ``inputs`` channels."""
    c1, c2, c3 = channels
    return nn.Sequential(
        nn.Conv2d(inputs, c1, 4, 4, bias=False),
        nn.BatchNorm2d(c1),
        nn.GELU(),
        _stage(c1, c2, 2),
        _stage(c2, c3, 1),
        _stage(c3, c3, 1),
    )


class GrimaceNet(nn.Module):
    """Greyscale frames (n, 1, H, W) in [0, 1] -> grimace logits (n,); see the module docstring."""

    def __init__(self, config: GrimaceConfig | None = None) -> None:
        super().__init__()
        self.config = config or GrimaceConfig()
        self.body = detector_body(1, self.config.channels)
        self.score = nn.Conv2d(self.config.channels[2], 1, 1)

    def score_map(self, frames: Tensor) -> Tensor:
        """Per-position logits (n, H/8, W/8)."""
        return self.score(self.body(frames))[:, 0]

    def forward(self, frames: Tensor) -> Tensor:
        return pool_scores(self.score_map(frames))


def pool_scores(scores: Tensor) -> Tensor:
    """A frame's logit from its score map (n, rows, cols): the log-mean-exp, a smooth maximum."""
    flat = scores.flatten(1)
    return torch.logsumexp(flat, dim=1) - math.log(flat.shape[1])


def score_shares(scores: Tensor) -> Tensor:
    """Each position's share of the frame's logit (the softmax of the map (n, rows, cols), the
    gradient of the log-mean-exp), summed over 2x2 blocks: (n, rows/2, cols/2), where the
    detector saw what it scored."""
    n, rows, cols = scores.shape
    share = torch.softmax(scores.flatten(1), dim=1).reshape(n, 1, rows, cols)
    return F.avg_pool2d(share, 2, ceil_mode=True, divisor_override=1)[:, 0]


def to_grimace_input(image_bgr: np.ndarray, config: FrameSize) -> np.ndarray:
    """One frame as the detectors see it (grimace and twitch): greyscale at the configured size, uint8."""
    if image_bgr.shape[1] != config.width or image_bgr.shape[0] != config.height:
        image_bgr = cv2.resize(image_bgr, (config.width, config.height), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)


def as_tensor(frames: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (n, H, W) -> float (n, 1, H, W) in [0, 1] on ``device``."""
    return torch.from_numpy(frames).to(device)[:, None].float().div_(255.0)


@torch.no_grad()
def grimace_logits(net: GrimaceNet, frames: np.ndarray, device: torch.device, *, batch: int = 256) -> np.ndarray:
    """Logits (n,) for uint8 greyscale frames (n, H, W), in batches."""
    net.eval()
    return _read(net, frames, device, batch=batch, saliency=False)[0]


@torch.no_grad()
def grimace_readings(
    net: GrimaceNet, frames: np.ndarray, device: torch.device, *, batch: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n,) and saliency (n, H/16, W/16) for uint8 greyscale frames (n, H, W), in batches.
    The saliency is each position's share of the frame's score (the softmax of the map, which
    is the gradient of the log-mean-exp), summed over 2x2 blocks: where the detector saw it."""
    net.eval()
    return _read(net, frames, device, batch=batch, saliency=True)


def _read(
    net: GrimaceNet, frames: np.ndarray, device: torch.device, *, batch: int, saliency: bool
) -> tuple[np.ndarray, np.ndarray]:
    return read_scores(net.score_map, lambda chunk: as_tensor(chunk, device), frames, device, batch=batch,
                       saliency=saliency)  # fmt: skip


def read_scores(
    score_map: Callable[[Tensor], Tensor],
    to_tensor: Callable[[np.ndarray], Tensor],
    inputs: np.ndarray,
    device: torch.device,
    *,
    batch: int,
    saliency: bool,
) -> tuple[np.ndarray, np.ndarray]:
    """Both detectors' reading loop: ``inputs`` in batches through ``to_tensor`` and ``score_map``
    (bf16 autocast on CUDA), giving logits (n,) and, when asked for, the maps' shares
    (:func:`score_shares`; only the worker shows them, in evidence), else an empty array."""
    logits, shares = [], []
    for start in range(0, len(inputs), batch):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            scores = score_map(to_tensor(inputs[start : start + batch])).float()
        logits.append(pool_scores(scores).cpu())
        if saliency:
            shares.append(score_shares(scores).cpu())
    if not logits:
        return np.zeros(0, np.float32), np.zeros((0, 0, 0), np.float32)
    return torch.cat(logits).numpy(), torch.cat(shares).numpy() if shares else np.zeros((0, 0, 0), np.float32)


def _affine(frames: Tensor, angle: Tensor, sx: Tensor, sy: Tensor, shift: Tensor) -> Tensor:
    """``frames`` (n, frames, H, W) each rotated by ``angle`` (radians), scaled by ``1 / sx`` and
    ``1 / sy`` and shifted by ``shift`` (n, 2; a share of half the frame), per sample, the edge
    reflected back in where the picture leaves the frame."""
    _, _, height, width = frames.shape
    cos, sin = torch.cos(angle), torch.sin(angle)
    aspect = height / width  # the grid's coordinates are normalised per axis: rotate in pixels
    theta = torch.stack(
        [
            torch.stack([cos * sx, -sin * sy * aspect, shift[:, 0]], 1),
            torch.stack([sin * sx / aspect, cos * sy, shift[:, 1]], 1),
        ],
        1,
    )
    grid = F.affine_grid(theta, list(frames.shape), align_corners=False)
    return F.grid_sample(frames, grid, padding_mode="reflection", align_corners=False).clamp(0.0, 1.0)


def _draws(frames: Tensor, rng: np.random.Generator) -> Callable[..., Tensor]:
    n, device = frames.shape[0], frames.device

    def draw(low: float, high: float, *shape: int) -> Tensor:
        return torch.from_numpy(rng.uniform(low, high, size=(n, *shape)).astype(np.float32)).to(device)

    return draw


def augment_greyscale(frames: Tensor, rng: np.random.Generator) -> Tensor:
    """Label-preserving changes per sample (n, frames, H, W) in [0, 1], one draw for all the frames
    of a sample (the twitch detector's stacks; the grimace detector's samples are one frame) but
    noise of its own in each: mirror and flip, rotation by up
    to 34 degrees, zoom 0.7-1.4x with the aspect ratio changed 0.72-1.39x, a shift of up to an
    eighth of the frame that can push the face part out of it (the edge reflected back in),
    brightness, contrast, gamma and sensor noise up to a dark infrared frame's. Wider than the
    simulator's own variation of camera and light, so the detector leans on the face, not on one
    ward's framing.
    Parameters come from ``rng``: reproducible."""
    draw = _draws(frames, rng)
    frames = torch.where(draw(0, 1, 1, 1, 1) < 0.5, frames.flip(-1), frames)
    frames = torch.where(draw(0, 1, 1, 1, 1) < 0.5, frames.flip(-2), frames)
    angle = draw(-0.6, 0.6)
    zoom = torch.exp(draw(math.log(0.7), math.log(1.4)))
    stretch = torch.exp(draw(math.log(0.85), math.log(1.18)))
    frames = _affine(frames, angle, 1.0 / (zoom * stretch), stretch / zoom, draw(-0.25, 0.25, 2))
    mean = frames.mean(dim=(1, 2, 3), keepdim=True)
    frames = ((frames - mean) * draw(0.6, 1.2, 1, 1, 1) + mean).clamp(0.0, 1.0)
    frames = frames ** torch.exp(draw(-0.4, 0.4, 1, 1, 1)) * draw(0.5, 1.5, 1, 1, 1)
    generator = torch.Generator(device=frames.device).manual_seed(int(rng.integers(2**31)))
    frames = frames + torch.randn(frames.shape, generator=generator, device=frames.device) * draw(0.0, 0.04, 1, 1, 1)
    return frames.clamp_(0.0, 1.0)


def augment_distance(frames: Tensor, rng: np.random.Generator) -> Tensor:
    """The camera nearer or farther, and nothing else: per sample (n, frames, H, W) in [0, 1], one
    draw for all its frames, a mirror image half the time, zoom 0.7-1.3x (the same on both axes)
    and a shift of up to a sixteenth of the frame (the edge reflected back in). No rotation, light
    or noise, so that a movement's size on screen is the only thing it changes. Tried for the twitch
    detector on unseen rooms, whose worst third by F1 had the farthest cameras; it did not help
    there: those misses were false positives from camera shake and other nuisances (MODEL_CARD.md).
    Parameters come from ``rng``: reproducible."""
    draw = _draws(frames, rng)
    frames = torch.where(draw(0, 1, 1, 1, 1) < 0.5, frames.flip(-1), frames)
    scale = 1.0 / torch.exp(draw(math.log(0.7), math.log(1.3)))
    return _affine(frames, torch.zeros_like(scale), scale, scale, draw(-0.125, 0.125, 2))


# What --augmentation names: the detectors' augmented steps and augmented validation.
AUGMENTATIONS: dict[str, Callable[[Tensor, np.random.Generator], Tensor]] = {
    "full": augment_greyscale,
    "distance": augment_distance,
}


def stored_grimace(net: GrimaceNet) -> dict[str, Any]:
    """What a ``model.pt`` keeps of a grimace detector (key ``"grimace"``): the inverse of
    :func:`load_grimace`."""
    return {"config": net.config.to_dict(), "state_dict": net.state_dict()}


def load_grimace(saved: dict[str, Any], device: str | torch.device = "cpu") -> GrimaceNet | None:
    """The grimace detector stored in a loaded ``model.pt`` (key ``"grimace"``), or None."""
    return load_stored(saved, "grimace", lambda config: GrimaceNet(GrimaceConfig.from_dict(config)), device)


Net = TypeVar("Net", bound=nn.Module)


def load_stored(
    saved: dict[str, Any], key: str, build: Callable[[dict[str, Any]], Net], device: str | torch.device
) -> Net | None:
    """A detector stored under ``key`` of a loaded ``model.pt`` (``{"config", "state_dict"}``),
    built from its config by ``build``, in eval mode on ``device``; None when there is none."""
    stored = saved.get(key)
    if stored is None:
        return None
    net = build(stored["config"])
    net.load_state_dict(stored["state_dict"])
    return net.to(device).eval()


def sigmoid(logits: np.ndarray) -> np.ndarray:
    return np.asarray(1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64))), np.float32)
