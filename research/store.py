"""Writing and reading recordings, streaming: no Kafka here, and memory stays bounded.

The writer appends each record as it arrives (one JSON Lines file per topic, one MP4 per camera
whose packets are the frames' JPEGs unchanged, a sidecar line per frame) and writes the manifest
on close. The reader yields a recording's records lazily, merged across files by event time
with :func:`heapq.merge`: one open file and one pending record per topic partition and camera,
whatever the recording's length. Within a file, records keep their recorded (arrival) order, so
each bed's order on each topic is kept. A topic's file is read as one stream per Kafka partition:
arrival order interleaves the partitions as the consumer happened to fetch them (a partition's
records may arrive minutes of event time after another's), while each partition is in the order
it was produced, which is event time; merging the partitions' streams is therefore in event time.
"""

from __future__ import annotations

import heapq
import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from fractions import Fraction
from pathlib import Path
from typing import IO, Any

import av

from icu import __version__
from icu.contracts import (
    JSON_MODELS,
    Alert,
    Contract,
    ContractError,
    Detection,
    Evidence,
    Frame,
    FrameHeader,
    Topic,
    decode,
    decode_record,
    make_frame,
)
from research import ResearchError
from research.blur import blur_jpeg
from research.manifest import (
    TRUTH_NAME,
    BedSpan,
    CameraFile,
    Manifest,
    ModelVersion,
    ReplayInfo,
    TopicFile,
    read_manifest,
    write_manifest,
)

RECORDED_TOPICS: tuple[Topic, ...] = (
    Topic.FRAMES,
    Topic.VITALS,
    Topic.DETECTIONS,
    Topic.EVIDENCE,
    Topic.ALERTS,
    Topic.ALERT_ACKS,
    Topic.CAMERA_STATUS,
)
"""What `icu record` captures. Not alerts-fhir (derived from alerts), ticks or dead letters."""

INPUT_TOPICS: frozenset[Topic] = frozenset({Topic.FRAMES, Topic.VITALS, Topic.DETECTIONS, Topic.CAMERA_STATUS})
"""Topics whose records mark a bed as being watched (its patient-hours)."""

_VIDEO_TIME_BASE = Fraction(1, 1000)


def event_time(message: Contract | Frame) -> datetime:
    """The time a record is about: capture time of a frame, ``updated_at`` of an alert version,
    else the message's ``ts``."""
    if isinstance(message, Frame):
        return message.header.capture_ts
    if isinstance(message, Alert):
        return message.updated_at
    ts = getattr(message, "ts", None)
    if not isinstance(ts, datetime):
        raise ResearchError(f"{type(message).__name__} has no event time")
    return ts


def _iso(value: datetime) -> str:
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Position:
    """Where a record was read from Kafka (absent for recordings made without a broker)."""

    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None


class _CameraWriter:
    def __init__(self, folder: Path, camera_id: str, bed_id: str) -> None:
        self.camera_id, self.bed_id = camera_id, bed_id
        self.video = f"video/{camera_id}.mp4"
        self.timestamps = f"video/{camera_id}.frames.jsonl"
        (folder / "video").mkdir(exist_ok=True)
        self._container: Any = av.open(str(folder / self.video), "w")
        self._sidecar = (folder / self.timestamps).open("w", encoding="utf-8")
        self._stream: Any = None
        self._origin: datetime | None = None
        self._last_pts = -1
        self.frames = 0
        self.width = self.height = 0

    def add(self, frame: Frame, position: Position) -> None:
        h = frame.header
        if self._stream is None:
            self._stream = self._container.add_stream("mjpeg", rate=10)
            self._stream.width, self._stream.height = h.width, h.height
            self._stream.pix_fmt = "yuvj420p"
            self._stream.time_base = _VIDEO_TIME_BASE
            self._origin = h.capture_ts
            self.width, self.height = h.width, h.height
        assert self._origin is not None
        # The container needs increasing times; the sidecar keeps the true capture times.
        pts = max(self._last_pts + 1, round((h.capture_ts - self._origin).total_seconds() * 1000))
        packet = av.Packet(frame.jpeg)
        packet.stream = self._stream
        packet.pts = packet.dts = pts
        packet.time_base = _VIDEO_TIME_BASE
        packet.is_keyframe = True
        self._container.mux(packet)
        self._last_pts = pts
        line = {"i": self.frames, "seq": h.seq, "capture_ts": _iso(h.capture_ts), "bed_id": h.bed_id,
                "camera_id": h.camera_id, "width": h.width, "height": h.height, "partition": position.partition,
                "offset": position.offset, "timestamp_ms": position.timestamp_ms}  # fmt: skip
        self._sidecar.write(json.dumps(line) + "\n")
        self.frames += 1

    def close(self) -> CameraFile:
        self._sidecar.close()
        self._container.close()
        return CameraFile(camera_id=self.camera_id, bed_id=self.bed_id, video=self.video,
                          timestamps=self.timestamps, frames=self.frames, width=self.width,
                          height=self.height)  # fmt: skip


class RecordingWriter:
    """Appends records to a new recording folder; :meth:`close` writes the manifest.

    ``beds`` keeps only those beds (empty: every bed). With ``blur_faces`` every frame and every
    evidence keyframe is blurred before it is written (see :mod:`research.blur`).
    """

    def __init__(
        self, folder: Path, *, source: dict[str, Any], beds: Iterable[str] = (), blur_faces: bool = False
    ) -> None:
        if folder.exists() and any(folder.iterdir()):
            raise ResearchError(f"{folder} exists and is not empty; choose a new folder for the recording")
        folder.mkdir(parents=True, exist_ok=True)
        self.folder = folder
        self.source = source
        self.beds = frozenset(beds)
        self.blur_faces = blur_faces
        self.rejected = 0
        self._files: dict[Topic, tuple[IO[str], TopicFile]] = {}
        self._cameras: dict[str, _CameraWriter] = {}
        self._spans: dict[str, list[datetime]] = {}
        self._models: set[tuple[str, str]] = set()
        self._start: datetime | None = None
        self._end: datetime | None = None
        self._truth: str | None = None
        self._replay: ReplayInfo | None = None
        self.manifest: Manifest | None = None

    def wants(self, bed_id: str) -> bool:
        return not self.beds or bed_id in self.beds

    def add_record(
        self,
        topic: Topic,
        *,
        key: bytes | None,
        value: bytes | None,
        headers: Iterable[tuple[str, bytes | None]] | None = None,
        position: Position | None = None,
    ) -> bool:
        """Decode a Kafka record by its topic's contract and append it; False when it is refused
        (malformed: counted in ``rejected``) or of a bed not recorded."""
        try:
            message: Contract | Frame = decode_record(topic, value, list(headers or ()))
        except ContractError:
            self.rejected += 1
            return False
        return self.add(message, position=position, raw=value if topic is not Topic.FRAMES else None)

    def add(self, message: Contract | Frame, *, position: Position | None = None, raw: bytes | None = None) -> bool:
        """Append one decoded message (``raw``: its original JSON, kept as is when given)."""
        bed_id = message.header.bed_id if isinstance(message, Frame) else getattr(message, "bed_id", None)
        if not isinstance(bed_id, str) or not self.wants(bed_id):
            return False
        position = position or Position()
        t = event_time(message)
        self._start = t if self._start is None else min(self._start, t)
        self._end = t if self._end is None else max(self._end, t)
        if isinstance(message, Frame):
            self._write_frame(message, position)
        else:
            self._write_json(message, position, raw)
        if message.topic in INPUT_TOPICS:
            span = self._spans.setdefault(bed_id, [t, t])
            span[0], span[1] = min(span[0], t), max(span[1], t)
        if isinstance(message, Detection):
            self._models.add((message.model, message.model_version))
        return True

    def _write_frame(self, frame: Frame, position: Position) -> None:
        if self.blur_faces:
            frame = make_frame(frame.header, blur_jpeg(frame.jpeg))
        camera = self._cameras.get(frame.header.camera_id)
        if camera is None:
            camera = self._cameras[frame.header.camera_id] = _CameraWriter(
                self.folder, frame.header.camera_id, frame.header.bed_id
            )
        camera.add(frame, position)

    def _write_json(self, message: Contract, position: Position, raw: bytes | None) -> None:
        if isinstance(message, Evidence) and self.blur_faces:
            message = message.model_copy(update={"keyframe_jpeg": blur_jpeg(message.keyframe_jpeg)})
            raw = None
        value = json.loads(raw) if raw is not None else message.model_dump(mode="json")
        entry = self._files.get(message.topic)
        if entry is None:
            name = f"{message.topic.value}.jsonl"
            entry = self._files[message.topic] = (
                (self.folder / name).open("w", encoding="utf-8"),
                TopicFile(topic=message.topic.value, path=name, records=0),
            )
        handle, info = entry
        key = getattr(message, "bed_id", None)
        line = {"t": _iso(event_time(message)), "topic": message.topic.value, "partition": position.partition,
                "offset": position.offset, "timestamp_ms": position.timestamp_ms, "key": key,
                "value": value}  # fmt: skip
        handle.write(json.dumps(line, separators=(",", ":")) + "\n")
        info.records += 1

    def attach_truth(self, path: Path) -> int:
        """Copy ground truth or annotations (JSON Lines) into the recording, keeping only the
        recorded beds' lines; returns how many lines were kept."""
        if not path.is_file():
            raise ResearchError(f"truth file {path} does not exist")
        kept = 0
        with path.open(encoding="utf-8") as src, (self.folder / TRUTH_NAME).open("a", encoding="utf-8") as dst:
            for number, line in enumerate(src, start=1):
                if not line.strip():
                    continue
                try:
                    bed = json.loads(line).get("bed_id")
                except (json.JSONDecodeError, AttributeError):
                    raise ResearchError(f"{path}:{number}: not a JSON object") from None
                if isinstance(bed, str) and self.wants(bed):
                    dst.write(line if line.endswith("\n") else line + "\n")
                    kept += 1
        self._truth = TRUTH_NAME
        return kept

    def has_truth(self) -> None:
        """Declare ``truth.jsonl``, written into the folder by the caller, in the manifest."""
        self._truth = TRUTH_NAME

    def set_replay(self, info: ReplayInfo) -> None:
        self._replay = info

    def close(self) -> Manifest:
        """Close every file and write the manifest (also for an empty recording)."""
        topics = []
        for handle, info in self._files.values():
            handle.close()
            topics.append(info)
        cameras = [camera.close() for camera in self._cameras.values()]
        self.manifest = Manifest(
            icu_watch_version=__version__,
            created_at=datetime.now(UTC),
            source=self.source,
            start=self._start,
            end=self._end,
            beds=[BedSpan(bed_id=b, start=s, end=e) for b, (s, e) in sorted(self._spans.items())],
            topics=sorted(topics, key=lambda t: t.topic),
            cameras=sorted(cameras, key=lambda c: c.camera_id),
            models=[ModelVersion(model=m, model_version=v) for m, v in sorted(self._models)],
            truth=self._truth,
            faces_blurred=self.blur_faces,
            replay=self._replay,
        )
        write_manifest(self.folder, self.manifest)
        return self.manifest

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.manifest is None:
            self.close()


# --- reading -------------------------------------------------------------------------------


class _All:
    """``iter_topic``'s default: every partition."""


ALL = _All()
# The recorder writes "partition" right after "t" and "topic", before the value (a dead letter's
# value has a "partition" of its own); a record without one has "partition": null.
_PARTITION = re.compile(r'"partition":\s*(\d+|null)')


def _partition_of(line: str) -> int | None:
    match = _PARTITION.search(line)
    return int(match.group(1)) if match and match.group(1) != "null" else None


@dataclass(frozen=True, slots=True)
class RecordedEvent:
    """One record of a recording: its event time (epoch seconds), topic and decoded message."""

    t: float
    topic: Topic
    message: Contract | Frame


class Recording:
    """A recording folder opened for reading; every iterator streams from disk."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.manifest = read_manifest(folder)

    def topics(self) -> list[Topic]:
        present = [Topic(t.topic) for t in self.manifest.topics]
        if self.manifest.cameras:
            present.append(Topic.FRAMES)
        return present

    def iter_topic(self, topic: Topic, *, partition: int | _All | None = ALL) -> Iterator[RecordedEvent]:
        """A topic's records in recorded order (only ``partition``'s, when given; None: records
        with no partition, as a simulated recording has)."""
        if topic is Topic.FRAMES:
            for camera in self.manifest.cameras:
                yield from self.iter_camera(camera)
            return
        model = JSON_MODELS[topic]
        for info in self.manifest.topics:
            if info.topic != topic.value:
                continue
            path = self.folder / info.path
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    # Another partition's record is skipped before it is parsed: each partition's
                    # stream reads the file, so parsing every line in each would be done repeatedly.
                    if partition is not ALL and _partition_of(line) != partition:
                        continue
                    try:
                        entry = json.loads(line)
                        message = decode(model, json.dumps(entry["value"]).encode())
                    except (json.JSONDecodeError, KeyError, ContractError) as exc:
                        raise ResearchError(f"{path}:{number}: not a {topic.value} record ({exc})") from None
                    yield RecordedEvent(event_time(message).timestamp(), topic, message)

    def partitions(self, topic: Topic) -> list[int | None]:
        """The Kafka partitions ``topic``'s records came from (None for records without one)."""
        found: set[int | None] = set()
        for info in self.manifest.topics:
            if info.topic == topic.value:
                with (self.folder / info.path).open(encoding="utf-8") as lines:
                    found.update(_partition_of(line) for line in lines)
        return sorted(found, key=lambda p: -1 if p is None else p)

    def iter_camera(self, camera: CameraFile) -> Iterator[RecordedEvent]:
        """One camera's frames (original JPEG bytes from the MP4) with their sidecar headers."""
        container: Any = av.open(str(self.folder / camera.video))
        try:
            stream = container.streams.video[0]
            with (self.folder / camera.timestamps).open(encoding="utf-8") as sidecar:
                packets = (p for p in container.demux(stream) if p.size)
                for line, packet in zip(sidecar, packets, strict=False):
                    entry = json.loads(line)
                    header = FrameHeader(bed_id=entry["bed_id"], camera_id=entry["camera_id"],
                                         capture_ts=entry["capture_ts"], seq=entry["seq"], width=entry["width"],
                                         height=entry["height"])  # fmt: skip
                    frame = make_frame(header, bytes(packet))
                    yield RecordedEvent(header.capture_ts.timestamp(), Topic.FRAMES, frame)
        finally:
            container.close()

    def iter_events(self, topics: Iterable[Topic] | None = None) -> Iterator[RecordedEvent]:
        """Every record of ``topics`` (default all), merged by event time (ties: topic order)."""
        wanted = list(topics) if topics is not None else self.topics()
        streams: list[Iterator[RecordedEvent]] = []
        for topic in wanted:
            if topic is Topic.FRAMES:
                streams.extend(self.iter_camera(c) for c in self.manifest.cameras)
            elif topic.value in {t.topic for t in self.manifest.topics}:
                streams.extend(self.iter_topic(topic, partition=p) for p in self.partitions(topic))
        return heapq.merge(*streams, key=lambda e: e.t)

    def truth_path(self) -> Path | None:
        return self.folder / self.manifest.truth if self.manifest.truth else None


def shifted(message: Contract | Frame, shift: timedelta) -> Contract | Frame:
    """The message with every timestamp moved by ``shift`` (a replay's re-stamping)."""
    if not shift:
        return message
    if isinstance(message, Frame):
        header = message.header.model_copy(update={"capture_ts": message.header.capture_ts + shift})
        return Frame(header=header, jpeg=message.jpeg)
    update = {name: value + shift for name, value in message if isinstance(value, datetime)}
    return message.model_copy(update=update)
