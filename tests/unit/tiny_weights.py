"""A small temporal model's weights file for the detector tests (grimace, twitch) to train into."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from inference.model import build_model
from inference.train import weights_contents


def tiny_weights(path: Path) -> Path:
    """``path`` (a ``model.pt``, with its ``.json``): an untrained model with 48x64 input, lookahead 2."""
    torch.manual_seed(0)
    model = build_model(height=48, width=64, channels=(8, 16), dim=16, heads=2, temporal_layers=3, lookahead_frames=2)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(weights_contents(model), path)
    path.with_suffix(".json").write_text(json.dumps({"model": model.config.name}))
    return path
