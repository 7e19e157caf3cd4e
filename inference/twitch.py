"""The twitch detector: a small fully convolutional network over five consecutive frames at camera
resolution (320x240 greyscale, the grimace detector's frames), scoring the middle one.

Why a second network beside the temporal model: a myoclonic jerk is 50-250 ms, one to three
frames at 10 fps, and a clonic seizure's jerks come three to five times a second with a frame or
two of rest between them. A jerk of the head moves it by one or two camera pixels and rolls it a
few degrees; at the temporal model's 128x96 that is under a pixel, and the temporal model, which
sees each frame through a 16-pixel token grid, blurred isolated jerks into their neighbours
(twitch F1 0.75 on the test split, segmental F1@50 0.43).

A jerk is out and back: where the limb is, the jerking frames differ from the frames just before
and just after the jerk, while slow movement (agitation, a blanket, a nurse) differs a little from
each neighbour everywhere it moves, and steadily. So the network sees the frame and its
differences from the two frames before and the two after (``neighbours``), and the frame it scores
is the middle one: a reading comes two frames after the frame it describes. Like the grimace
detector it is not told where the limbs are: each position of its output map scores a patch
around it, and the frame's logit is the log-mean-exp of the map; the map's peak is where it saw
the jerk.

A model file carries it beside the temporal model (``model.pt`` key ``"twitch"``); when it is
there, it gives the twitch probability of every frame and the temporal model's own twitch head
is not used. ``icu train-twitch`` trains it and stores it there.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from inference.grimace import check_body, detector_body, load_stored, pool_scores, read_scores


@dataclass(frozen=True)
class TwitchConfig:
    width: int = 320
    height: int = 240
    channels: tuple[int, int, int] = (16, 32, 32)  # 4x4 patches, a stride-2 stage, two more convolutions
    # Frames on each side of the frame scored: a reading lags its frame by this many. Two, not
    # one: a 250 ms jerk displaces the limb in three frames running, and the middle one differs
    # little from either neighbour; two frames out it is back in place.
    neighbours: int = 2
    # Shift each neighbour onto the scored frame before differencing (the camera's global
    # translation, by phase correlation): a shaking camera moves the whole picture a few pixels
    # between frames, which differences show as jerks everywhere. 0 turns it off.
    align_px: int = 0

    def __post_init__(self) -> None:
        check_body("twitch", self.width, self.height, self.channels)
        if not 1 <= self.neighbours <= 5:
            raise ValueError(f"twitch neighbours {self.neighbours}: 1 to 5 frames each side")
        if not 0 <= self.align_px <= min(self.width, self.height) // 4:
            raise ValueError(f"twitch align_px {self.align_px}: 0 (off) to a quarter of the frame's height")

    @property
    def span(self) -> int:
        """Frames one reading sees: the frame and its neighbours on both sides."""
        return 2 * self.neighbours + 1

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "channels": list(self.channels)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TwitchConfig:
        return cls(int(data["width"]), int(data["height"]), tuple(int(c) for c in data["channels"]),  # type: ignore[arg-type]
                   int(data["neighbours"]), int(data.get("align_px", 0)))  # fmt: skip


def global_shifts(current: Tensor, others: Tensor, max_px: int) -> Tensor:
    """The translation (dy, dx), in pixels, that carries each of ``others`` (n, k, H, W) onto
    ``current`` (n, 1, H, W): ``current(y, x) ~ other(y - dy, x - dx)``; (n, k, 2). Phase
    correlation over Hann-windowed frames, its peak searched within ``max_px`` of no shift and
    refined to a fraction of a pixel by a parabola through the peak and its neighbours. A limb or
    a person moving over a still picture leaves the peak at (0, 0): it is the whole picture that
    must move."""
    height, width = current.shape[-2:]
    window = torch.outer(torch.hann_window(height, periodic=False, device=current.device),
                         torch.hann_window(width, periodic=False, device=current.device))  # fmt: skip
    spectrum = torch.fft.rfft2(current * window)
    cross = spectrum * torch.fft.rfft2(others * window).conj()
    surface = torch.fft.irfft2(cross / (cross.abs() + 1e-9), s=(height, width))
    # The (2 max_px + 1)^2 shifts around zero, wrapped: index max_px is no shift.
    span = 2 * max_px + 1
    near = torch.roll(surface, (max_px, max_px), dims=(-2, -1))[..., :span, :span]
    flat = near.flatten(-2).argmax(-1)
    rows, cols = flat // span, flat % span
    padded = F.pad(near, (1, 1, 1, 1), mode="replicate")

    def refine(before: Tensor, peak: Tensor, after: Tensor) -> Tensor:
        curvature = before - 2 * peak + after
        offset = 0.5 * (before - after) / torch.where(curvature.abs() > 1e-9, curvature, torch.ones_like(curvature))
        return torch.where(curvature < 0, offset, torch.zeros_like(offset)).clamp(-0.5, 0.5)

    def at(dr: int, dc: int) -> Tensor:
        index = ((rows + 1 + dr) * (span + 2) + cols + 1 + dc).unsqueeze(-1)
        return padded.flatten(-2).gather(-1, index)[..., 0]

    peak = at(0, 0)
    dy = rows.to(current.dtype) - max_px + refine(at(-1, 0), peak, at(1, 0))
    dx = cols.to(current.dtype) - max_px + refine(at(0, -1), peak, at(0, 1))
    return torch.stack([dy, dx], dim=-1)


def shift_frames(frames: Tensor, shifts: Tensor) -> Tensor:
    """Each frame of (m, H, W) translated by its (dy, dx) of (m, 2): ``out(y, x) = frame(y - dy,
    x - dx)``, bilinear, the edge repeated where the frame has no pixels."""
    count, height, width = frames.shape
    theta = torch.zeros(count, 2, 3, dtype=frames.dtype, device=frames.device)
    theta[:, 0, 0] = 1.0
    theta[:, 1, 1] = 1.0
    theta[:, 0, 2] = -2.0 * shifts[:, 1] / width
    theta[:, 1, 2] = -2.0 * shifts[:, 0] / height
    grid = F.affine_grid(theta, [count, 1, height, width], align_corners=False)
    return F.grid_sample(frames[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)[:, 0]


class TwitchNet(nn.Module):
    """Frame stacks (n, span, H, W) in [0, 1], oldest first, the scored frame in the middle ->
    twitch logits of the middle frames (n,); see the module docstring."""

    def __init__(self, config: TwitchConfig | None = None) -> None:
        super().__init__()
        self.config = config or TwitchConfig()
        # The grimace detector's body over the frame and its differences from its neighbours: a
        # stride-2 stem instead of 4x4 patches was five times the cost per training step, and a
        # patch of differences still shows a pixel of motion in it.
        self.body = detector_body(self.config.span, self.config.channels)
        self.score = nn.Conv2d(self.config.channels[2], 1, 1)

    def score_map(self, stacks: Tensor) -> Tensor:
        """Per-position logits (n, H/8, W/8)."""
        middle = self.config.neighbours
        current = stacks[:, middle : middle + 1]
        others = torch.cat([stacks[:, :middle], stacks[:, middle + 1 :]], dim=1)
        if self.config.align_px:
            # Where the camera moved is measured, not learned, and in full precision whatever
            # autocast the caller runs under (bf16 on CUDA): the fraction of a pixel is read from
            # small differences between the correlation peak and its shoulders.
            with torch.no_grad(), torch.autocast(stacks.device.type, enabled=False):
                others = align_neighbours(current.float(), others.float(), self.config.align_px).to(others.dtype)
        # Differences of a pixel or two of motion are a few grey levels: scaled up to the frame's range.
        inputs = torch.cat([current, 4.0 * (current - others)], dim=1)
        return self.score(self.body(inputs))[:, 0]

    def forward(self, stacks: Tensor) -> Tensor:
        return pool_scores(self.score_map(stacks))


STILL_PX = 0.5  # a neighbour moved less than this is left as it is (see align_neighbours)


def align_neighbours(current: Tensor, others: Tensor, max_px: int) -> Tensor:
    """``others`` (n, k, H, W) each carried onto ``current`` (n, 1, H, W) by the camera's global
    translation (:func:`global_shifts`, measured at half resolution: nearly as close as at full
    on the simulator's shaking cameras and a third of the cost), up to ``max_px`` pixels. A
    neighbour that moved less than ``STILL_PX`` is left as it is: the fraction of a pixel read
    from the correlation peak's shoulders is pulled by local motion (a limb, a person walking
    through) by up to half a pixel, and resampling a still picture by that much would show its
    every edge as motion."""
    shifts = 2.0 * global_shifts(F.avg_pool2d(current, 2), F.avg_pool2d(others, 2), max(1, max_px // 2))
    moved = shifts.abs().amax(-1) >= STILL_PX  # (n, k)
    if not bool(moved.any()):
        return others
    aligned = others.clone()
    aligned[moved] = shift_frames(others[moved], shifts[moved])
    return aligned


def frame_stacks(frames: np.ndarray, neighbours: int) -> np.ndarray:
    """uint8 (n, H, W) consecutive frames -> (n, 2 * neighbours + 1, H, W): each frame with its
    neighbours, oldest first, the first and last frames standing in for missing ones (a clip's
    edges)."""
    n = len(frames)
    index = (np.arange(n)[:, None] + np.arange(-neighbours, neighbours + 1)[None]).clip(0, max(0, n - 1))
    return frames[index]


def stacks_tensor(stacks: np.ndarray, device: torch.device) -> Tensor:
    """uint8 (n, span, H, W) -> float in [0, 1] on ``device``."""
    return torch.from_numpy(stacks).to(device).float().div_(255.0)


@torch.no_grad()
def twitch_readings(
    net: TwitchNet, stacks: np.ndarray, device: torch.device, *, batch: int = 128, saliency: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Logits (n,) and, when asked for, saliency (n, H/16, W/16) (see
    :func:`inference.grimace.score_shares`) for frame stacks, uint8 (n, span, H, W), in batches."""
    net.eval()
    return read_scores(net.score_map, lambda chunk: stacks_tensor(chunk, device), stacks, device, batch=batch,
                       saliency=saliency)  # fmt: skip


def twitch_logits(net: TwitchNet, frames: np.ndarray, device: torch.device, *, chunk: int = 256) -> np.ndarray:
    """Logits (n,) of every frame of consecutive uint8 greyscale frames (n, H, W), ``chunk``
    frames at a time (each read with its real neighbours; near a clip's first and last frames,
    the edge frame stands in for missing ones)."""
    k = net.config.neighbours
    logits = []
    for start in range(0, len(frames), chunk):
        context = max(0, start - k)
        stacks = frame_stacks(frames[context : start + chunk + k], k)
        read = twitch_readings(net, stacks, device, saliency=False)[0]
        logits.append(read[start - context :][: min(chunk, len(frames) - start)])
    return np.concatenate(logits) if logits else np.zeros(0, np.float32)


def stored_twitch(net: TwitchNet) -> dict[str, Any]:
    """What a ``model.pt`` keeps of a twitch detector (key ``"twitch"``): the inverse of
    :func:`load_twitch`."""
    return {"config": net.config.to_dict(), "state_dict": net.state_dict()}


def load_twitch(saved: dict[str, Any], device: str | torch.device = "cpu") -> TwitchNet | None:
    """The twitch detector stored in a loaded ``model.pt`` (key ``"twitch"``), or None."""
    return load_stored(saved, "twitch", lambda config: TwitchNet(TwitchConfig.from_dict(config)), device)
