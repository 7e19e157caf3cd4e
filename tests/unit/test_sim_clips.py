"""Clip sets: the dataset format, label/frame alignment through the codec, and determinism."""

from __future__ import annotations

import hashlib
import itertools
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from icu.cli import main
from simulator.bed import BedSimulation
from simulator.clips import LABEL_KEYS, ClipError, plan_clip_set, read_clip_labels, write_clip, write_clip_set
from simulator.scenario import parse_scenario


def _decode(path: Path) -> tuple[list[np.ndarray], float]:
    capture = cv2.VideoCapture(str(path))
    fps = capture.get(cv2.CAP_PROP_FPS)
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(frame)
    capture.release()
    return frames, fps


def test_clip_format_and_frame_alignment_through_the_codec(tmp_path: Path) -> None:
    scenario = parse_scenario(
        {
            "name": "aligned",
            "duration_s": 12,
            "episodes": [
                {"kind": "seizure", "onset_s": 4, "duration_s": 4, "frequency_hz": 2, "limbs": ["left_arm"]},
                {"kind": "apnea", "onset_s": 1, "duration_s": 10},
            ],
        }
    )
    (spec,) = plan_clip_set(n=1, seed=3, split="val", duration_s=12, fps=10, width=320, height=240,
                            scenarios=[scenario])  # fmt: skip
    json_path = write_clip(spec, tmp_path)
    document = read_clip_labels(json_path)
    assert set(document) == {"fps", "labels", "events", "meta"}
    assert document["fps"] == 10
    assert set(document["labels"]) == set(LABEL_KEYS)
    frames, fps = _decode(json_path.with_suffix(".mp4"))
    assert fps == pytest.approx(10)
    assert all(len(values) == len(frames) == 120 for values in document["labels"].values())
    assert frames[0].shape == (240, 320, 3)
    labels = document["labels"]
    assert set(labels["grimace"]) == {0}
    assert labels["apnea"][:10] == [0] * 10
    assert labels["apnea"][10:110] == [1] * 100
    assert all(rr is None for rr in labels["resp_rate_bpm"][10:110])
    assert all(isinstance(rr, float) for rr in labels["resp_rate_bpm"][:10])
    twitch = np.array(labels["twitch"], dtype=bool)
    assert not twitch[:40].any()
    assert not twitch[80:].any()
    assert twitch[40:80].sum() >= 10
    # The decoded video's motion in the arm lines up with the twitch labels frame by frame.
    x0, y0, x1, y1 = document["meta"]["regions"]["left_arm"]
    grey = [cv2.GaussianBlur(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), (0, 0), 1.5)[y0:y1, x0:x1].astype(float)
            for f in frames]  # fmt: skip
    energy = np.array([0.0] + [np.abs(b - a).mean() for a, b in itertools.pairwise(grey)])
    moving = np.maximum(energy, np.roll(energy, -1))
    assert moving[twitch].mean() > 3 * moving[:35].mean()
    kinds = [(e["type"], e["onset_s"], e["end_s"], e["finding"], e["alert_expected"]) for e in document["events"]]
    assert kinds == [("seizure", 4.0, 8.0, True, True), ("apnea", 1.0, 11.0, True, False)]
    assert document["meta"]["synthetic"] is True
    assert document["meta"]["frames"] == 120


def test_same_seed_same_bytes_other_seed_other_labels(tmp_path: Path) -> None:
    def build(folder: str, seed: int) -> list[Path]:
        specs = plan_clip_set(n=3, seed=seed, split="train", duration_s=15, fps=10, width=160, height=120)
        return list(write_clip_set(specs, tmp_path / folder))

    first, again, other = build("a", 11), build("b", 11), build("c", 12)
    for a, b in zip(first, again, strict=True):
        assert a.name == b.name
        assert a.read_bytes() == b.read_bytes()
        assert _decode(a.with_suffix(".mp4"))[0][0].shape == (120, 160, 3)
    # The rendered pixels are reproducible too (the H.264 bytes need not be: encoders may vary).
    for spec in plan_clip_set(n=3, seed=11, split="train", duration_s=15, fps=10, width=160, height=120):
        renders = []
        for _ in range(2):
            sim = BedSimulation(
                spec.scenario, seed=spec.seed, split=spec.split, index=spec.index, width=160, height=120
            )
            renders.append(hashlib.sha256(b"".join(f.image.tobytes() for f in sim.frames())).hexdigest())
        assert renders[0] == renders[1]
    labels = [json.loads(p.read_text())["labels"] for p in first]
    other_labels = [json.loads(p.read_text())["labels"] for p in other]
    assert labels != other_labels


def test_random_sets_cover_every_label(tmp_path: Path) -> None:
    specs = plan_clip_set(n=40, seed=0, split="train", duration_s=30, fps=10, width=320, height=240)
    kinds = {episode.kind for spec in specs for episode in spec.scenario.episodes}
    assert {"pain", "apnea", "myoclonus", "seizure", "walk_through", "night_mode"} <= kinds
    assert any(not spec.scenario.episodes or all(not e.finding for e in spec.scenario.episodes) for spec in specs)


@pytest.mark.parametrize("duration_s", [3, 10, 11, 12])
def test_short_random_clips_leave_out_episodes_that_do_not_fit(duration_s: float) -> None:
    # An apnea needs 10 s and must end 2 s before the clip does: a 10 s clip used to crash.
    specs = plan_clip_set(n=30, seed=1, split="train", duration_s=duration_s, fps=10, width=160, height=120)
    for spec in specs:
        for episode in spec.scenario.episodes:
            assert episode.onset_s + episode.duration_s <= duration_s + 1e-6


def test_parallel_workers_write_the_same_set(tmp_path: Path) -> None:
    specs = plan_clip_set(n=2, seed=5, split="unseen", duration_s=4, fps=10, width=160, height=120)
    serial = list(write_clip_set(specs, tmp_path / "serial"))
    parallel = list(write_clip_set(specs, tmp_path / "parallel", workers=2))
    assert [p.read_bytes() for p in serial] == [p.read_bytes() for p in parallel]


def test_bad_clip_requests_are_clear_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ClipError, match="must be even"):
        plan_clip_set(n=1, seed=0, split="train", duration_s=5, fps=10, width=321, height=240)
    assert main(["sim", "clips", "--out", str(tmp_path), "--n", "1", "--seed", "0", "--size", "32x24"]) == 2
    assert "outside 64x48" in capsys.readouterr().err
    assert main(["sim", "clips", "--out", str(tmp_path), "--n", "1", "--seed", "0", "--scenario", "nope"]) == 2
    assert "no scenario named 'nope'" in capsys.readouterr().err
    broken = tmp_path / "broken.json"
    broken.write_text('{"fps": 10, "labels": {"grimace": [0, 1], "twitch": [0]}}')
    with pytest.raises(ClipError, match="label lists differ in length"):
        read_clip_labels(broken)


def test_cli_writes_a_named_scenario_set(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    scenario = tmp_path / "short.yaml"
    scenario.write_text("name: short\nduration_s: 3\nepisodes:\n  - {kind: pain, onset_s: 0.5, duration_s: 2}\n")
    out = tmp_path / "set"
    argv = [
        "sim",
        "clips",
        "--out",
        str(out),
        "--n",
        "2",
        "--seed",
        "9",
        "--split",
        "test",
        "--scenario",
        str(scenario),
    ]
    assert main(argv) == 0
    assert "wrote 2 clips (test, seed 9)" in capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == [
        "test-s9-00000-short.json", "test-s9-00000-short.mp4", "test-s9-00001-short.json", "test-s9-00001-short.mp4",
    ]  # fmt: skip
    documents = [json.loads((out / n).read_text()) for n in names if n.endswith(".json")]
    assert documents[0]["meta"]["appearance"] != documents[1]["meta"]["appearance"]  # new patient per clip


def test_contact_sheet_and_bench_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "sheet.png"
    assert main(["sim", "contact-sheet", "--out", str(out), "--scale", "0.25"]) == 0
    sheet = cv2.imread(str(out))
    assert sheet is not None
    assert sheet.shape == (11 * 60, 5 * 80, 3)  # 10 scenario rows + the face row, 5 patients, 320x240 cells
    capsys.readouterr()
    assert main(["bench", "sim", "--frames", "20", "--repeats", "1"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert figures["render_target_ms"] == 2.0
    assert figures["render_ms_per_frame_median"] > 0
    assert figures["render_ratio_to_target"] == pytest.approx(figures["render_ms_per_frame_median"] / 2.0, abs=0.001)
