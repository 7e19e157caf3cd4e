"""The project's temporal video model: factorised space-time, two streams, frame-level outputs.

Per frame, an **appearance stream** (the RGB frame) and a **motion stream** (the difference from
the previous frame) are each encoded by a small strided 2D CNN into a grid of spatial tokens.
Motion tokens attend to appearance tokens (**cross-attention fusion**: *where* something moves is
read against *what* is there: a face, a limb, the chest under the blanket), and an attention pool
with a learned query turns each frame's fused tokens into one vector; its attention weights are
the saliency map used as evidence. **Time** is then modelled separately, (2+1)D-style, by a stack
of causal dilated residual 1D convolutions (MS-TCN's temporal blocks, causal so that the output
at a frame uses only that frame and the past: what a live worker sees). The receptive field is
``2 ** (layers + 1) - 1`` frames (127, 12.7 s at 10 fps with 6 layers): the worker's window
(``ICU_INFER_WINDOW_FRAMES``, 128) holds all of it, so a live worker computes exactly what
offline evaluation over a whole clip computes. The sequence is extended into the past by
repeating its first frame (not zeros), the same padding a worker uses before a bed's window fills.

**Lookahead.** The output at frame ``t`` describes frame ``t - lookahead_frames`` (20: 2 s at
10 fps). Whether breathing has *stopped* or a limb *jerked and came back* is only certain a
moment later; a fixed, short reporting delay buys that certainty and keeps the model causal in
what it computes. Offline, :func:`align_outputs` maps outputs back onto the frames they describe.

Heads, per described frame: logits for grimace, twitch and apnea, and the respiration rate
(breaths/min), regressed directly from the temporal features. Weights that carry a grimace
detector (:mod:`inference.grimace`, a second network at camera resolution) take the grimace
probability from it instead of from the grimace head: at 128x96 a face is too small to read.
Likewise weights that carry a twitch detector (:mod:`inference.twitch`, over five consecutive
frames at camera resolution) take the twitch probability from it: a jerk of one to three frames
moves a limb by a pixel or two at 128x96.

Pure torch (no torchvision): builds on CPU and CUDA alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from inference.grimace import FrameSize, GrimaceNet
from inference.metrics import FINDINGS
from inference.twitch import TwitchNet

APPEARANCE_POOLS = ("mean", "attention")
RR_SCALE = 30.0  # the rate head predicts breaths/min divided by this (targets near 0.3-1.0)


@dataclass(frozen=True)
class ModelConfig:
    """One model variant (also stored inside every checkpoint)."""

    name: str = "temporal-small"
    height: int = 96
    width: int = 128
    channels: tuple[int, ...] = (16, 32, 48, 64)
    dim: int = 64
    heads: int = 4
    temporal_layers: int = 6
    dropout: float = 0.1
    lookahead_frames: int = 20
    # How the appearance tokens become one vector per frame: "mean" over the grid, or
    # "attention" (a learned query, like the fused pool), which can single out the few tokens
    # that hold the face instead of averaging it with the bed and the room.
    appearance_pool: str = "mean"

    def __post_init__(self) -> None:
        if self.appearance_pool not in APPEARANCE_POOLS:
            raise ValueError(f"appearance_pool must be one of {APPEARANCE_POOLS}, got {self.appearance_pool!r}")
        levels = len(self.channels)
        if self.height % (1 << levels) or self.width % (1 << levels):
            raise ValueError(
                f"height and width ({self.height}x{self.width}) must be multiples of 2**{levels} "
                f"(one halving per entry of channels)"
            )

    @property
    def receptive_field(self) -> int:
        """Frames the temporal blocks see, the current one included."""
        return 2 ** (self.temporal_layers + 1) - 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        values = dict(data)
        if "channels" in values:
            values["channels"] = tuple(values["channels"])
        return cls(**values)


def _encoder(in_channels: int, channels: tuple[int, ...], dim: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    previous = in_channels
    for width in channels:
        layers += [
            nn.Conv2d(previous, width, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.GELU(),
        ]
        previous = width
    layers.append(nn.Conv2d(previous, dim, 1))
    return nn.Sequential(*layers)


class CausalResidual(nn.Module):
    """A dilated causal 1D convolution with a residual connection (MS-TCN's block, causal)."""

    def __init__(self, dim: int, dilation: int, dropout: float) -> None:
        super().__init__()
        self.pad = 2 * dilation
        self.conv = nn.Conv1d(dim, dim, 3, dilation=dilation)
        self.mix = nn.Conv1d(dim, dim, 1)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: Tensor) -> Tensor:  # (batch, dim, time)
        y = self.conv(F.pad(x, (self.pad, 0)))
        return x + self.dropout(self.mix(F.gelu(y)))


class TemporalNet(nn.Module):
    """Frames (batch, time, 3, H, W) in [0, 1] -> per-frame outputs (see :meth:`forward`)."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.appearance = _encoder(3, config.channels, config.dim)
        self.motion = _encoder(3, config.channels, config.dim)
        grid = (config.height >> len(config.channels)) * (config.width >> len(config.channels))
        self.position = nn.Parameter(torch.zeros(1, grid, config.dim))
        self.cross = nn.MultiheadAttention(config.dim, config.heads, dropout=config.dropout, batch_first=True)
        self.norm = nn.LayerNorm(config.dim)
        self.pool_query = nn.Parameter(torch.randn(1, 1, config.dim) * 0.02)
        self.pool = nn.MultiheadAttention(config.dim, config.heads, batch_first=True)
        self.appearance_query: nn.Parameter | None = None
        self.appearance_pool: nn.MultiheadAttention | None = None
        if config.appearance_pool == "attention":
            self.appearance_query = nn.Parameter(torch.randn(1, 1, config.dim) * 0.02)
            self.appearance_pool = nn.MultiheadAttention(config.dim, config.heads, batch_first=True)
        self.temporal_in = nn.Conv1d(2 * config.dim, config.dim, 1)
        self.temporal = nn.Sequential(
            *[CausalResidual(config.dim, 2**i, config.dropout) for i in range(config.temporal_layers)]
        )
        self.findings = nn.Conv1d(config.dim, len(FINDINGS), 1)
        self.resp_rate = nn.Conv1d(config.dim, 1, 1)
        # Trained apart and stored under its own key (icu train-grimace); when present it gives
        # the grimace probability and the grimace head above is not used.
        self.grimace_detector: GrimaceNet | None = None
        # Likewise for twitch (icu train-twitch).
        self.twitch_detector: TwitchNet | None = None

    def detector_frames(self) -> FrameSize | None:
        """The greyscale frame size the detectors read (both read the same frames), or None
        without detectors."""
        sizes = {(d.config.width, d.config.height) for d in (self.grimace_detector, self.twitch_detector) if d}
        if len(sizes) > 1:
            raise ValueError(f"the grimace and twitch detectors read different frame sizes {sorted(sizes)}")
        detector = self.grimace_detector or self.twitch_detector
        return None if detector is None else detector.config

    def frame_features(self, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Per-frame fused vectors (batch, time, 2*dim) and saliency (batch, time, grid)."""
        previous = torch.cat([frames[:, :1], frames[:, :-1]], dim=1)
        return self.frame_pair_features(frames, previous)

    def frame_pair_features(self, frames: Tensor, previous: Tensor) -> tuple[Tensor, Tensor]:
        """Like :meth:`frame_features` with each frame's predecessor given explicitly (a worker
        has it from the previous poll)."""
        b, t, c, h, w = frames.shape
        flat = frames.reshape(b * t, c, h, w)
        previous = previous.reshape(b * t, c, h, w)
        appearance = self.appearance(flat).flatten(2).transpose(1, 2) + self.position  # (bt, grid, dim)
        motion = self.motion(flat - previous).flatten(2).transpose(1, 2) + self.position
        fused, _ = self.cross(motion, appearance, appearance, need_weights=False)
        tokens = self.norm(motion + fused)
        pooled, weights = self.pool(self.pool_query.expand(b * t, -1, -1), tokens, tokens, need_weights=True)
        # Appearance pooled over space too: what the scene is, next to what moved in it.
        if self.appearance_pool is not None and self.appearance_query is not None:
            seen, seen_weights = self.appearance_pool(
                self.appearance_query.expand(b * t, -1, -1), appearance, appearance, need_weights=True
            )
            # The saliency shown in evidence is where either pool looked: motion or a still face.
            weights = (weights + seen_weights) / 2
            vector = torch.cat([pooled[:, 0], seen[:, 0]], dim=-1)
        else:
            vector = torch.cat([pooled[:, 0], appearance.mean(dim=1)], dim=-1)
        return vector.reshape(b, t, -1), weights[:, 0].reshape(b, t, -1)

    def heads(self, vectors: Tensor) -> dict[str, Tensor]:
        """Temporal blocks and heads over per-frame vectors (batch, time, 2*dim). In eval mode a
        frame's vector does not depend on other frames, so a live worker computes each frame's
        vector once and runs only this part over its sliding window."""
        history = self.config.receptive_field - 1
        x = self.temporal_in(vectors.transpose(1, 2))
        # Extend the past by repeating the first frame, then drop that part again: no output
        # depends on zero padding, so a sequence and any window of it holding the receptive field
        # give the same outputs.
        x = self.temporal(F.pad(x, (history, 0), mode="replicate"))[..., history:]
        return {
            "findings": self.findings(x).transpose(1, 2),
            "resp_rate": F.softplus(self.resp_rate(x)[:, 0]) * RR_SCALE,
        }

    def forward(self, frames: Tensor) -> dict[str, Tensor]:
        """``findings``: logits (batch, time, 3) for grimace, twitch, apnea; ``resp_rate``:
        breaths/min (batch, time); ``saliency``: attention over the token grid (batch, time, grid)."""
        vectors, saliency = self.frame_features(frames)
        return {**self.heads(vectors), "saliency": saliency}


def align_outputs(values: Tensor, lookahead: int) -> Tensor:
    """Outputs (batch, time, ...) re-indexed onto the frames they describe: frame ``t`` takes the
    output at ``t + lookahead``; the last ``lookahead`` frames, whose outputs do not exist yet at
    the end of a clip, hold the last output."""
    if lookahead <= 0:
        return values
    n = values.shape[1]
    index = torch.clamp(torch.arange(n, device=values.device) + lookahead, max=n - 1)
    return values[:, index]


def build_model(*, config: ModelConfig | None = None, **overrides: Any) -> TemporalNet:
    """Keyword-only builder: ``build_model(config=...)`` or ``build_model(dim=96, ...)``."""
    base = config or ModelConfig()
    if overrides:
        base = ModelConfig.from_dict({**base.to_dict(), **overrides})
    return TemporalNet(base)
