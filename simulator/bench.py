"""`icu bench sim`: rendering cost per frame on one core, against the 2 ms target."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from tempfile import TemporaryDirectory
from typing import Any

import cv2
import numpy as np

from simulator.bed import BedSimulation
from simulator.clips import VideoWriter, random_clip_scenario

RENDER_TARGET_MS = 2.0


def bench_render(*, frames: int = 600, repeats: int = 5, width: int = 320, height: int = 240) -> dict[str, Any]:
    """Median ms per frame for rendering (course + draw), JPEG encoding and H.264 clip writing."""
    cv2.setNumThreads(1)  # the target is per core: no OpenCV worker threads
    render_ms: list[float] = []
    jpeg_ms: list[float] = []
    h264_ms: list[float] = []
    for repeat in range(repeats):
        # Each repeat is a different random patient and episode mix, as in a clip set.
        scenario = random_clip_scenario(np.random.default_rng(repeat), duration_s=frames / 10.0, name=f"bench-{repeat}")
        sim = BedSimulation(scenario, seed=repeat, index=repeat, width=width, height=height)
        sample: list[np.ndarray] = []  # frames kept for the encoders
        start = time.perf_counter()
        for frame in sim.frames():
            if len(sample) < 100:
                sample.append(frame.image.copy())
        render_ms.append((time.perf_counter() - start) * 1000 / sim.frame_count)
        start = time.perf_counter()
        for image in sample:
            cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
        jpeg_ms.append((time.perf_counter() - start) * 1000 / len(sample))
        with TemporaryDirectory() as folder:
            writer = VideoWriter(Path(folder) / "bench.mp4", fps=10, width=width, height=height)
            start = time.perf_counter()
            for image in sample:
                writer.write(image)
            writer.close()
            h264_ms.append((time.perf_counter() - start) * 1000 / len(sample))
    render = statistics.median(render_ms)
    return {
        "size": f"{width}x{height}",
        "frames_per_repeat": frames,
        "repeats": repeats,
        "render_ms_per_frame_median": round(render, 3),
        "render_ms_per_frame_runs": [round(v, 3) for v in render_ms],
        "render_target_ms": RENDER_TARGET_MS,
        "render_ratio_to_target": round(render / RENDER_TARGET_MS, 3),
        "jpeg_encode_ms_per_frame_median": round(statistics.median(jpeg_ms), 3),
        "h264_encode_ms_per_frame_median": round(statistics.median(h264_ms), 3),
        "beds_per_core_at_10fps_render_plus_jpeg": round(1000 / (10 * (render + statistics.median(jpeg_ms))), 1),
    }
