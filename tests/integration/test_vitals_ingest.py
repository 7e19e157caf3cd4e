"""The vitals ingest end to end: a real MLLP socket and HTTP client in, the embedded broker out.

The service runs in-process on its own asyncio loop in a background thread (ports 0); the
tests talk to it the way a monitor or a script would, with plain blocking sockets.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import hl7
import pytest

from icu.contracts import DeadLetter, Topic, Vitals, decode, encode
from infra.broker import EmbeddedBroker
from infra.settings import TopicsAdminSettings
from infra.topics import create_topics
from ingest.vitals.service import VitalsIngest
from ingest.vitals.settings import VitalsIngestSettings
from tests import samples
from tests.integration.records import read_records
from tests.unit.test_vitals_hl7 import BPM, HR_ECG, PERCENT, RESP, RPM, SPO2, hl7_ts, obx, oru_message

TOKEN = "vitals-token-0123456789abcdef"
BEDS = "ICU1-07,ICU1-08,icu1-bed01,icu1-bed02"


class RunningIngest:
    """A :class:`VitalsIngest` serving on its own event loop in a background thread."""

    def __init__(self, settings: VitalsIngestSettings) -> None:
        self.service = VitalsIngest(settings)
        self._loop = asyncio.new_event_loop()
        self._stop: asyncio.Event | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._loop.run_until_complete, args=(self._serve(),), daemon=True)

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        try:
            await self.service.start()
        except BaseException as exc:
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        try:
            await self._stop.wait()
        finally:
            await self.service.stop()

    def __enter__(self) -> RunningIngest:
        self._thread.start()
        assert self._ready.wait(30), "vitals ingest did not start"
        if self._error is not None:
            raise self._error
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)
        self._loop.close()

    @property
    def mllp_address(self) -> tuple[str, int]:
        assert self.service.mllp_port is not None
        return ("127.0.0.1", self.service.mllp_port)

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.service.http_port}"


def ingest_settings(kafka: TopicsAdminSettings, **overrides: Any) -> VitalsIngestSettings:
    fields: dict[str, Any] = {
        "kafka_bootstrap_servers": kafka.kafka_bootstrap_servers,
        "topic_prefix": kafka.topic_prefix,
        "topic_partitions": kafka.topic_partitions,
        "beds": BEDS,
        "vitals_mllp_port": 0,
        "vitals_http_port": 0,
        "vitals_http_token": TOKEN,
    }
    fields.update(overrides)
    return VitalsIngestSettings(**fields)


@pytest.fixture
def start_ingest(kafka_settings: TopicsAdminSettings) -> Iterator[Callable[..., RunningIngest]]:
    started: list[RunningIngest] = []

    def start(**overrides: Any) -> RunningIngest:
        running = RunningIngest(ingest_settings(kafka_settings, **overrides)).__enter__()
        started.append(running)
        return running

    yield start
    for running in started:
        running.__exit__()


@pytest.fixture
def ingest(start_ingest: Callable[..., RunningIngest]) -> RunningIngest:
    return start_ingest()


# --- clients ---------------------------------------------------------------------------------


class MllpClient:
    """A monitor's side of MLLP: one framed message out, one framed ACK back."""

    def __init__(self, address: tuple[str, int]) -> None:
        self.sock = socket.create_connection(address, timeout=30)
        self.buffer = b""

    def send_raw(self, data: bytes) -> None:
        self.sock.sendall(data)

    def read_ack(self) -> hl7.Message:
        while b"\x1c\x0d" not in self.buffer:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"connection closed; got {self.buffer!r}")
            self.buffer += chunk
        frame, _, self.buffer = self.buffer.partition(b"\x1c\x0d")
        assert frame.startswith(b"\x0b"), frame
        return hl7.parse(frame[1:].decode())

    def send(self, message: bytes) -> hl7.Message:
        self.send_raw(b"\x0b" + message + b"\x1c\x0d")
        return self.read_ack()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def mllp(ingest: RunningIngest) -> Iterator[MllpClient]:
    client = MllpClient(ingest.mllp_address)
    yield client
    client.close()


def msa(ack: hl7.Message) -> tuple[str, str, str]:
    segment = ack.segment("MSA")
    return tuple(segment.extract_field(1, n) for n in (1, 2, 3))


def post(url: str, body: bytes, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def now_message(*observations_at: Callable[[str], str], **kwargs: Any) -> bytes:
    at = hl7_ts(datetime.now(UTC).replace(microsecond=0))
    return oru_message(*(make(at) for make in observations_at), **kwargs)


def hr(value: str) -> Callable[[str], str]:
    return lambda at: obx(HR_ECG, value, BPM, ts=at, set_id=1)


def spo2(value: str) -> Callable[[str], str]:
    return lambda at: obx(SPO2, value, PERCENT, ts=at, set_id=2)


def rr(value: str) -> Callable[[str], str]:
    return lambda at: obx(RESP, value, RPM, ts=at, set_id=3)


def vitals_topic(settings: TopicsAdminSettings) -> str:
    return Topic.VITALS.full_name(settings.topic_prefix)


def dead_letter_topic(settings: TopicsAdminSettings) -> str:
    return Topic.DEAD_LETTER.full_name(settings.topic_prefix)


def dead_letters(settings: TopicsAdminSettings, expected: int) -> list[DeadLetter]:
    return [decode(DeadLetter, r.value) for r in read_records(settings, dead_letter_topic(settings), expected)]


# --- HL7 v2 over MLLP ------------------------------------------------------------------------


def test_valid_oru_is_acknowledged_aa_after_it_is_on_the_vitals_topic(kafka_settings, mllp):
    ack = mllp.send(now_message(hr("72"), spo2("97"), rr("16"), control_id="C-OK-1"))
    assert msa(ack) == ("AA", "C-OK-1", "")
    assert str(ack.segment("MSH")(9)) == "ACK^R01^ACK"

    (record,) = read_records(kafka_settings, vitals_topic(kafka_settings), 1)
    assert record.key == b"ICU1-07"
    vitals = decode(Vitals, record.value)
    assert (vitals.bed_id, vitals.source, vitals.patient_id) == ("ICU1-07", "hl7", "P12345")
    assert (vitals.hr, vitals.spo2, vitals.rr) == (72, 97, 16)
    assert abs(vitals.ts - datetime.now(UTC)) < timedelta(minutes=1)


def test_malformed_message_gets_ar_and_a_dead_letter_with_the_reason(kafka_settings, mllp):
    garbage = b"this is not HL7 at all"
    ack = mllp.send(garbage)
    code, control_id, text = msa(ack)
    assert (code, control_id) == ("AR", "")
    assert "does not start with an MSH segment" in text

    (letter,) = dead_letters(kafka_settings, 1)
    assert letter.stage == "vitals-ingest"
    assert (letter.source_topic, letter.partition, letter.offset) == ("mllp", 0, 0)
    assert letter.error_type == "unparseable"
    assert letter.value == garbage
    assert letter.key is None
    assert "does not start with an MSH segment" in letter.reason


def test_impossible_value_gets_ae_a_dead_letter_and_nothing_on_vitals(kafka_settings, mllp):
    bad = now_message(hr("80"), spo2("140"), control_id="C-BAD")
    code, control_id, text = msa(mllp.send(bad))
    assert (code, control_id) == ("AE", "C-BAD")
    assert "spo2 140" in text

    (letter,) = dead_letters(kafka_settings, 1)
    assert letter.error_type == "contract"
    assert letter.key == b"ICU1-07"
    assert letter.value == bad
    assert "spo2 140" in letter.reason
    assert ("hl7-control-id", b"C-BAD") in [(h.name, h.value) for h in letter.headers]

    # The same bed's next, valid message is the first record of its partition: the
    # rejected one was never published.
    assert msa(mllp.send(now_message(hr("81"), control_id="C-GOOD")))[0] == "AA"
    (record,) = read_records(kafka_settings, vitals_topic(kafka_settings), 1)
    assert decode(Vitals, record.value).hr == 81


def test_unknown_bed_gets_ae(kafka_settings, mllp):
    code, _, text = msa(mllp.send(now_message(hr("70"), pv1="PV1||I|ICU9^^01")))
    assert code == "AE"
    assert "ICU9-01" in text
    (letter,) = dead_letters(kafka_settings, 1)
    assert letter.key == b"ICU9-01"


def test_several_messages_on_one_connection_each_get_their_ack(kafka_settings, mllp):
    replies = [msa(mllp.send(now_message(hr(str(60 + n)), control_id=f"C{n}"))) for n in range(5)]
    assert [(code, control_id) for code, control_id, _ in replies] == [("AA", f"C{n}") for n in range(5)]
    records = read_records(kafka_settings, vitals_topic(kafka_settings), 5)
    assert sorted(decode(Vitals, r.value).hr for r in records) == [60, 61, 62, 63, 64]


def test_oversized_message_gets_ar_and_the_connection_is_closed(kafka_settings, start_ingest):
    running = start_ingest(vitals_max_message_bytes=4096)
    client = MllpClient(running.mllp_address)
    try:
        client.send_raw(b"\x0b" + now_message(hr("70")) + b"OBX|9|NM|x||1|%\r" * 400 + b"\x1c\x0d")
        code, _, text = msa(client.read_ack())
        assert code == "AR"
        assert "exceeds 4096 bytes" in text
        assert client.sock.recv(1024) == b""  # closed: the frame boundary was lost
    finally:
        client.close()
    (letter,) = dead_letters(kafka_settings, 1)
    assert letter.error_type == "unparseable"
    assert letter.value is None


# --- JSON over HTTP ----------------------------------------------------------------------------


def json_vitals(**changes: Any) -> dict[str, Any]:
    reading = json.loads(encode(samples.vitals(ts=datetime.now(UTC).replace(microsecond=0))))
    reading.update(changes)
    return reading


def test_json_post_is_published_and_answered_202(kafka_settings, ingest):
    reading = json_vitals(source="bedside-app")
    status, body = post(f"{ingest.http_url}/vitals", json.dumps(reading).encode())
    assert (status, body) == (202, {"accepted": 1, "rejected": 0})
    (record,) = read_records(kafka_settings, vitals_topic(kafka_settings), 1)
    assert record.key == b"icu1-bed01"
    vitals = decode(Vitals, record.value)
    assert vitals.source == "bedside-app"
    assert vitals.hr == reading["hr"]


def test_invalid_json_vitals_get_422_and_a_dead_letter(kafka_settings, ingest):
    raw = json.dumps(json_vitals(spo2=140)).encode()
    status, body = post(f"{ingest.http_url}/vitals", raw)
    assert status == 422
    assert body["accepted"] == 0
    assert body["rejected"] == 1
    assert "spo2 140" in body["errors"][0]["reason"]
    (letter,) = dead_letters(kafka_settings, 1)
    assert (letter.source_topic, letter.partition, letter.offset) == ("http", 0, 0)
    assert letter.value == raw
    assert letter.key == b"icu1-bed01"
    assert letter.error_type == "contract"


def test_mixed_array_publishes_the_valid_and_dead_letters_the_invalid(kafka_settings, ingest):
    items = [
        json_vitals(hr=61.0),
        json_vitals(hr=-5),
        json_vitals(bed_id="icu1-bed02", hr=62.0),
        json_vitals(bed_id="x y"),
    ]
    status, body = post(f"{ingest.http_url}/vitals", json.dumps(items).encode())
    assert status == 422
    assert (body["accepted"], body["rejected"]) == (2, 2)
    assert [error["index"] for error in body["errors"]] == [1, 3]
    assert "hr -5" in body["errors"][0]["reason"]
    assert "published" in body["detail"]

    published = read_records(kafka_settings, vitals_topic(kafka_settings), 2)
    assert sorted(decode(Vitals, r.value).hr for r in published) == [61, 62]
    letters = sorted(dead_letters(kafka_settings, 2), key=lambda letter: letter.offset)
    assert [letter.offset for letter in letters] == [1, 3]
    assert [letter.key for letter in letters] == [b"icu1-bed01", None]
    assert json.loads(letters[0].value or b"")["hr"] == -5


def test_unparseable_body_gets_400_and_a_dead_letter(kafka_settings, ingest):
    status, body = post(f"{ingest.http_url}/vitals", b"{not json")
    assert status == 400
    assert body["errors"][0]["index"] is None
    (letter,) = dead_letters(kafka_settings, 1)
    assert letter.error_type == "unparseable"
    assert letter.value == b"{not json"


def test_oversized_body_gets_413(kafka_settings, start_ingest):
    running = start_ingest(vitals_max_message_bytes=2048)
    status, body = post(f"{running.http_url}/vitals", json.dumps([json_vitals()] * 20).encode())
    assert status == 413
    assert "exceeds 2048 bytes" in body["errors"][0]["reason"]
    (letter,) = dead_letters(kafka_settings, 1)
    assert letter.value is None
    assert letter.value_size is not None
    assert letter.value_size > 2048


def test_missing_or_wrong_token_gets_401_and_the_token_is_never_logged(kafka_settings, ingest, caplog):
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-token-which-must-not-be-logged"
    body = json.dumps(json_vitals()).encode()
    assert post(f"{ingest.http_url}/vitals", body, token=wrong)[0] == 401
    assert post(f"{ingest.http_url}/vitals", body, token=None)[0] == 401
    assert post(f"{ingest.http_url}/vitals", body)[0] == 202
    assert "missing or wrong bearer token" in caplog.text
    assert wrong not in caplog.text
    assert TOKEN not in caplog.text
    assert ingest.service.stats.auth_failures == 2


def test_healthz(ingest):
    with urllib.request.urlopen(f"{ingest.http_url}/healthz", timeout=10) as response:
        assert response.status == 200
        assert json.loads(response.read())["status"] == "ok"


# --- start-up and Kafka failures -----------------------------------------------------------------


def test_listeners_log_their_bound_ports_and_warn_about_empty_beds(kafka_settings, start_ingest, caplog):
    caplog.set_level(logging.INFO)
    running = start_ingest(beds="")
    assert f"listening for HL7 v2 (MLLP) on 127.0.0.1:{running.service.mllp_port}" in caplog.text
    assert f"on 127.0.0.1:{running.service.http_port} (bearer token required)" in caplog.text
    assert "ICU_BEDS is empty" in caplog.text


def test_kafka_unavailable_gets_ar_so_the_sender_resends(tmp_path):
    with EmbeddedBroker(port=0, log_file=tmp_path / "broker.log") as broker:
        kafka = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix="down")
        create_topics(kafka)
        with RunningIngest(ingest_settings(kafka, vitals_ack_timeout_s=1)) as running:
            client = MllpClient(running.mllp_address)
            try:
                assert msa(client.send(now_message(hr("70"))))[0] == "AA"
                broker.stop(timeout_s=0.5)
                code, _, text = msa(client.send(now_message(hr("71"), control_id="C-RETRY")))
                assert code == "AR"
                assert "resend" in text
                status, _ = post(f"{running.http_url}/vitals", json.dumps(json_vitals()).encode())
                assert status == 503
            finally:
                client.close()
            assert running.service.stats.store_failures == 2


# --- the command line ------------------------------------------------------------------------------

CLI_ENTRY = """
import argparse, sys
from ingest.vitals.cli import add_vitals_command
parser = argparse.ArgumentParser(prog="icu ingest")
add_vitals_command(parser.add_subparsers(dest="command", required=True))
args = parser.parse_args(sys.argv[1:])
sys.exit(args.handler(args))
"""


def test_cli_serves_until_sigterm_and_exits_cleanly(kafka_settings, repo_root):
    argv = [
        sys.executable, "-c", CLI_ENTRY, "vitals", "--mllp-port", "0", "--http-port", "0",
        "--kafka-bootstrap-servers", kafka_settings.kafka_bootstrap_servers,
        "--topic-prefix", kafka_settings.topic_prefix, "--beds", "ICU1-07",
    ]  # fmt: skip
    env = {**os.environ, "ICU_VITALS_HTTP_TOKEN": TOKEN, "ICU_LOG_LEVEL": "INFO"}
    process = subprocess.Popen(argv, cwd=repo_root, env=env, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            if "listening for JSON vitals" in line:
                break
        assert any("listening for HL7 v2 (MLLP) on 127.0.0.1:" in line for line in lines), lines
        process.send_signal(signal.SIGTERM)
        rest = process.communicate(timeout=30)[1]
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, rest
    assert "shutting down" in rest
    assert "vitals ingest stopped" in rest
    assert TOKEN not in "".join(lines) + rest
