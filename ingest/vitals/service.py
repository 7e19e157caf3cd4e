"""The vitals ingest service: an MLLP listener and an HTTP endpoint in front of Kafka.

The edge of the pipeline is where a sender can still be told to try again, so every reply
waits for Kafka: an HL7 AA (or HTTP 202) is sent only after the broker acknowledged the
vitals, and an AE/AR (or 422/400/413) only after it acknowledged the dead letter. When Kafka
does not answer within ``ICU_VITALS_ACK_TIMEOUT_S`` the reply is AR (HTTP 503), which tells
the sender to resend; nothing is acknowledged that was not stored. (A record Kafka stores
after that deadline is stored twice once the sender resends: at-least-once.)

kafka-python's producer blocks, so sends and the wait for their acknowledgements run in a
small thread pool; the asyncio loop only ever awaits. Parsing and admission are the pure
functions of :mod:`ingest.vitals.hl7map` and :mod:`ingest.vitals.gate`.

Rejected messages are dead-lettered as :class:`icu.contracts.DeadLetter` with
``stage="vitals-ingest"``. Edge rejects were never Kafka records, so the record coordinates
are the listener's: ``source_topic`` ``"mllp"`` or ``"http"``, partition 0, and ``offset`` the
message's sequence number on that listener since the process started (from 0).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hmac
import logging
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

from aiohttp import web
from hl7.mllp import start_hl7_server
from hl7.mllp.streams import CARRIAGE_RETURN, END_BLOCK, START_BLOCK, HL7StreamReader, HL7StreamWriter
from kafka.errors import KafkaError

from icu.contracts import DeadLetter, Topic, encode
from icu.kafka import Producer, RenewingProducer, close_producer, create_renewing_producer
from infra.errors import InfraError
from infra.topics import require_topics
from ingest.auth import bearer_token
from ingest.vitals.gate import JsonItem, RejectKind, VitalsGate, VitalsRejected, judge_json_body
from ingest.vitals.hl7map import Hl7Decision, decide
from ingest.vitals.settings import VitalsIngestSettings

if TYPE_CHECKING:
    from infra.observability import Observability

log = logging.getLogger(__name__)

STAGE: Final = "vitals-ingest"
MLLP_LISTENER: Final = "mllp"
HTTP_LISTENER: Final = "http"
SHUTDOWN_GRACE_S: Final = 5.0


class VitalsIngestError(InfraError):
    """The ingest cannot start: broker unreachable, topics missing, port taken."""


class StoreError(Exception):
    """Kafka did not acknowledge the records in time; the sender must resend."""


@dataclass
class IngestStats:
    """Counters since start. HL7 counts messages; JSON counts items (one body may hold many)."""

    hl7_accepted: int = 0
    hl7_rejected: int = 0
    json_accepted: int = 0
    json_rejected: int = 0
    vitals_published: int = 0
    dead_letters: int = 0
    store_failures: int = 0
    auth_failures: int = 0


@dataclass(frozen=True)
class OutRecord:
    topic: str
    key: bytes | None
    value: bytes


class KafkaSink:
    """Sends records and waits for the broker's acknowledgements off the event loop."""

    def __init__(self, producer: Producer, executor: ThreadPoolExecutor, timeout_s: float) -> None:
        self.producer = producer
        self.executor = executor
        self.timeout_s = timeout_s

    async def store(self, records: Sequence[OutRecord]) -> None:
        """Return once every record is acknowledged; raise :class:`StoreError` otherwise."""
        if not records:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self.executor, self._send_and_wait, list(records))

    def _send_and_wait(self, records: list[OutRecord]) -> None:
        deadline = time.monotonic() + self.timeout_s
        try:
            futures = [self.producer.send(r.topic, key=r.key, value=r.value) for r in records]
            for future in futures:
                future.get(timeout=max(0.0, deadline - time.monotonic()))
        except KafkaError as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc


def dead_letter(
    *,
    listener: str,
    sequence: int,
    raw: bytes | None,
    rejection: VitalsRejected,
    now: datetime,
    headers: Sequence[tuple[str, str]] = (),
    value_size: int | None = None,
) -> DeadLetter:
    """The dead letter for a message refused at the edge (see the module docstring)."""
    return DeadLetter.of(
        ts=now,
        stage=STAGE,
        source_topic=listener,
        partition=0,
        offset=sequence,
        key=rejection.bed_id.encode() if rejection.bed_id else None,
        value=raw,
        value_size=value_size,
        headers=[(name, value.encode()) for name, value in headers],
        reason=rejection.reason,
        error_type=rejection.kind.error_type,
    )


def _peer(address: Any) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address or "unknown")


class VitalsIngest:
    """Runs the MLLP and HTTP listeners until :meth:`stop`.

    ``clock`` gives the receiver's time (UTC) for the future-timestamp rule and dead letters.
    """

    def __init__(self, settings: VitalsIngestSettings, *, clock: Callable[[], datetime] | None = None) -> None:
        self.settings = settings
        self.clock = clock or (lambda: datetime.now(UTC))
        self.gate = VitalsGate(beds=settings, max_future_skew_s=settings.vitals_max_future_skew_s)
        self.stats = IngestStats()
        self.vitals_topic = Topic.VITALS.full_name(settings.topic_prefix)
        self.dead_letter_topic = Topic.DEAD_LETTER.full_name(settings.topic_prefix)
        self._token = settings.vitals_http_token.get_secret_value().encode() if settings.vitals_http_token else None
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vitals-kafka")
        self._producer: RenewingProducer | None = None
        self._sink: KafkaSink | None = None
        self._mllp_server: asyncio.Server | None = None
        self._http_runner: web.AppRunner | None = None
        self._connections: dict[asyncio.Task[None], bool] = {}  # task -> busy with a message
        self._sequence = {MLLP_LISTENER: 0, HTTP_LISTENER: 0}
        self._logged_codes: set[str] = set()
        self._stopping = False
        self.mllp_port: int | None = None
        """Bound MLLP port once started (None when that listener is disabled)."""
        self.http_port: int | None = None
        """Bound HTTP port once started (None when that listener is disabled)."""

    # --- lifecycle ----------------------------------------------------------------------------

    async def start(self) -> None:
        """Check the topics, connect the producer and open the listeners. Raises :class:`VitalsIngestError`."""
        settings = self.settings
        if not settings.beds:
            log.warning("ICU_BEDS is empty: vitals for any well-formed bed id are accepted")
        try:
            await self._connect_kafka()
            if settings.vitals_mllp_enabled:
                await self._start_mllp()
            if settings.vitals_http_enabled:
                await self._start_http()
        except BaseException:
            await self.stop()
            raise

    async def _connect_kafka(self) -> None:
        settings = self.settings
        loop = asyncio.get_running_loop()
        # require_topics is also the reachability check: an unreachable broker is one clear line.
        await loop.run_in_executor(None, require_topics, settings, [Topic.VITALS, Topic.DEAD_LETTER])
        try:
            self._producer = await loop.run_in_executor(
                None,
                functools.partial(
                    create_renewing_producer,
                    settings,
                    name="vitals ingest",
                    max_block_ms=int(settings.vitals_ack_timeout_s * 1000),
                ),
            )
        except KafkaError as exc:
            raise VitalsIngestError(
                f"cannot connect a producer to {settings.kafka_bootstrap_servers} (ICU_KAFKA_BOOTSTRAP_SERVERS): {exc}"
            ) from exc
        self._sink = KafkaSink(self._producer, self._executor, settings.vitals_ack_timeout_s)

    async def _start_mllp(self) -> None:
        host, port = self.settings.vitals_mllp_host, self.settings.vitals_mllp_port
        try:
            # The reader's limit bounds one frame (<VT> + message); the stream pauses the
            # socket at twice that, so a client cannot make us buffer more.
            self._mllp_server = await start_hl7_server(
                self._on_mllp_connection, host, port, limit=self.settings.vitals_max_message_bytes + 1
            )
        except OSError as exc:
            raise VitalsIngestError(
                f"cannot listen for HL7 v2 (MLLP) on {host}:{port} (ICU_VITALS_MLLP_HOST/_PORT): {exc}"
            ) from exc
        self.mllp_port = self._mllp_server.sockets[0].getsockname()[1]
        log.info("listening for HL7 v2 (MLLP) on %s:%d", host, self.mllp_port)

    async def _start_http(self) -> None:
        host, port = self.settings.vitals_http_host, self.settings.vitals_http_port
        app = web.Application(client_max_size=self.settings.vitals_max_message_bytes)
        app.router.add_post("/vitals", self._post_vitals)
        app.router.add_get("/healthz", self._healthz)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SHUTDOWN_GRACE_S)
        await runner.setup()
        self._http_runner = runner
        try:
            await web.TCPSite(runner, host, port).start()
        except OSError as exc:
            raise VitalsIngestError(
                f"cannot listen for JSON vitals (HTTP) on {host}:{port} (ICU_VITALS_HTTP_HOST/_PORT): {exc}"
            ) from exc
        self.http_port = runner.addresses[0][1]
        auth = "bearer token required" if self._token else "no token: anonymous posting"
        log.info("listening for JSON vitals (HTTP POST /vitals) on %s:%d (%s)", host, self.http_port, auth)

    async def stop(self) -> None:
        """Stop accepting, let messages in progress finish (a few seconds at most), flush, close."""
        self._stopping = True
        if self._mllp_server is not None:
            self._mllp_server.close()
        for task, busy in list(self._connections.items()):
            if not busy:
                task.cancel()
        if self._connections:
            _, pending = await asyncio.wait(list(self._connections), timeout=SHUTDOWN_GRACE_S)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)
        if self._mllp_server is not None:
            await self._mllp_server.wait_closed()
            self._mllp_server = None
        if self._http_runner is not None:
            await self._http_runner.cleanup()
            self._http_runner = None
        if self._producer is not None:
            producer, self._producer = self._producer, None
            # Every store() has returned by now, so whatever the producer still holds was
            # already answered AR/503: wait no longer than a sender would have.
            timeout_s = self.settings.vitals_ack_timeout_s
            await asyncio.get_running_loop().run_in_executor(None, close_producer, producer, timeout_s)
        self._executor.shutdown(wait=False)
        log.info("vitals ingest stopped: %s", ", ".join(f"{k}={v}" for k, v in asdict(self.stats).items()))

    async def run(self, stop: asyncio.Event) -> IngestStats:
        """Start, serve until ``stop`` is set, stop. Returns the counters."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.stop()
        return self.stats

    def _next_sequence(self, listener: str) -> int:
        sequence = self._sequence[listener]
        self._sequence[listener] = sequence + 1
        return sequence

    def _log_ignored(self, codes: frozenset[str]) -> None:
        for code in sorted(codes - self._logged_codes):
            self._logged_codes.add(code)
            log.info("ignoring OBX code %s: not a vital sign this ingest maps (logged once)", code)

    async def _store(self, records: Sequence[OutRecord]) -> None:
        assert self._sink is not None, "start() first"
        await self._sink.store(records)

    # --- HL7 v2 over MLLP -------------------------------------------------------------------

    def _on_mllp_connection(self, reader: HL7StreamReader, writer: HL7StreamWriter) -> None:
        peer = _peer(writer.get_extra_info("peername"))
        if self._stopping or len(self._connections) >= self.settings.vitals_mllp_max_connections:
            log.warning(
                "refusing MLLP connection from %s: %d connections open (ICU_VITALS_MLLP_MAX_CONNECTIONS)",
                peer,
                len(self._connections),
            )
            writer.close()
            return
        # python-hl7 would start the handler as a task nobody holds; hold it here so it is
        # neither garbage-collected mid-message nor forgotten at shutdown.
        task = asyncio.get_running_loop().create_task(self._serve_mllp(reader, writer, peer))
        self._connections[task] = False
        task.add_done_callback(lambda done: self._connections.pop(done, None))

    async def _serve_mllp(self, reader: HL7StreamReader, writer: HL7StreamWriter, peer: str) -> None:
        task = asyncio.current_task()
        assert task is not None
        log.info("MLLP connection from %s", peer)
        idle_timeout = self.settings.vitals_mllp_idle_timeout_s or None
        try:
            while not self._stopping:
                try:
                    frame = await asyncio.wait_for(reader.readuntil(END_BLOCK + CARRIAGE_RETURN), idle_timeout)
                except asyncio.IncompleteReadError as exc:
                    if exc.partial.strip():
                        log.warning("MLLP peer %s closed mid-message; %d bytes discarded", peer, len(exc.partial))
                    break
                except asyncio.LimitOverrunError:
                    self._connections[task] = True
                    await self._refuse_oversized_frame(writer, peer)
                    break  # the frame boundary is lost: the sender must reconnect
                except TimeoutError:
                    log.info("closing MLLP connection from %s: idle for %g s", peer, idle_timeout)
                    break
                self._connections[task] = True
                reply = await self._handle_mllp_frame(frame[:-2], peer)
                writer.writeblock(reply)
                await writer.drain()
                self._connections[task] = False
        except (ConnectionError, OSError) as exc:
            log.info("MLLP connection from %s lost: %s", peer, exc)
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _handle_mllp_frame(self, frame: bytes, peer: str) -> bytes:
        start = frame.find(START_BLOCK)
        if start < 0:
            sequence = self._next_sequence(MLLP_LISTENER)
            rejection = VitalsRejected(RejectKind.UNPARSEABLE, "MLLP frame does not start with <VT> (0x0b)")
            return await self._reject_hl7(Hl7Decision(header=None, rejection=rejection), frame, sequence, peer)
        if frame[:start].strip():
            log.warning("MLLP peer %s sent %d bytes outside a frame; discarded", peer, start)
        return await self._handle_hl7(frame[start + 1 :], peer)

    async def _handle_hl7(self, raw: bytes, peer: str) -> bytes:
        sequence = self._next_sequence(MLLP_LISTENER)
        now = self.clock()
        loop = asyncio.get_running_loop()
        decision = await loop.run_in_executor(None, functools.partial(decide, raw, self.gate, now=now))
        self._log_ignored(decision.ignored_codes)
        if decision.rejection is not None:
            return await self._reject_hl7(decision, raw, sequence, peer)
        records = [OutRecord(self.vitals_topic, v.key(), encode(v)) for v in decision.vitals]
        try:
            await self._store(records)
        except StoreError as exc:
            return self._store_failed(decision, "HL7 message", sequence, peer, exc)
        self.stats.hl7_accepted += 1
        self.stats.vitals_published += len(records)
        log.debug("accepted HL7 message #%d from %s: %d vitals for %s", sequence, peer, len(records), decision.bed_id)
        return _ack_bytes(decision, decision.ack(now=self.clock()))

    async def _reject_hl7(self, decision: Hl7Decision, raw: bytes | None, sequence: int, peer: str) -> bytes:
        rejection = decision.rejection
        assert rejection is not None
        header = decision.header
        control_id = header.control_id if header else ""
        log.warning(
            "rejected HL7 message #%d from %s (control id %r, bed %s, %s): %s",
            sequence,
            peer,
            control_id,
            rejection.bed_id or "unknown",
            rejection.kind.value,
            rejection.reason,
        )
        headers = [("peer", peer)] + ([("hl7-control-id", control_id)] if control_id else [])
        letter = dead_letter(
            listener=MLLP_LISTENER, sequence=sequence, raw=raw, rejection=rejection, now=self.clock(), headers=headers
        )
        try:
            await self._store([OutRecord(self.dead_letter_topic, letter.key, encode(letter))])
        except StoreError as exc:
            return self._store_failed(decision, "dead letter of HL7 message", sequence, peer, exc)
        self.stats.hl7_rejected += 1
        self.stats.dead_letters += 1
        return _ack_bytes(decision, decision.ack(now=self.clock()))

    def _store_failed(self, decision: Hl7Decision, what: str, sequence: int, peer: str, exc: StoreError) -> bytes:
        self.stats.store_failures += 1
        log.error("could not store %s #%d from %s; answering AR so it is resent: %s", what, sequence, peer, exc)
        return _ack_bytes(decision, decision.store_failed_ack(now=self.clock()))

    async def _refuse_oversized_frame(self, writer: HL7StreamWriter, peer: str) -> None:
        sequence = self._next_sequence(MLLP_LISTENER)
        limit = self.settings.vitals_max_message_bytes
        rejection = VitalsRejected(
            RejectKind.TOO_LARGE, f"HL7 message exceeds {limit} bytes (ICU_VITALS_MAX_MESSAGE_BYTES)"
        )
        decision = Hl7Decision(header=None, rejection=rejection)
        reply = await self._reject_hl7(decision, None, sequence, peer)
        with contextlib.suppress(ConnectionError, OSError):
            writer.writeblock(reply)
            await writer.drain()

    # --- JSON over HTTP ---------------------------------------------------------------------

    def _authorised(self, request: web.Request) -> bool:
        if self._token is None:
            return True
        given = bearer_token(request.headers.get("Authorization"))
        if given is None:
            return False
        return hmac.compare_digest(given.encode("utf-8", "surrogateescape"), self._token)

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok", **asdict(self.stats)})

    async def _post_vitals(self, request: web.Request) -> web.Response:
        peer = request.remote or "unknown"
        if not self._authorised(request):
            self.stats.auth_failures += 1
            log.warning("refused POST /vitals from %s: missing or wrong bearer token", peer)
            return web.json_response(
                {"error": "missing or wrong bearer token"},
                status=401,
                headers={"WWW-Authenticate": 'Bearer realm="icu-watch vitals"'},
            )
        limit = self.settings.vitals_max_message_bytes
        declared = request.content_length
        if declared is not None and declared > limit:
            return await self._refuse_large_body(peer, declared)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return await self._refuse_large_body(peer, None)
        now = self.clock()
        loop = asyncio.get_running_loop()
        items = await loop.run_in_executor(None, functools.partial(judge_json_body, self.gate, body, now=now))
        return await self._publish_json(items, peer, now)

    async def _publish_json(self, items: list[JsonItem], peer: str, now: datetime) -> web.Response:
        records: list[OutRecord] = []
        errors: list[dict[str, Any]] = []
        for item in items:
            sequence = self._next_sequence(HTTP_LISTENER)
            if item.vitals is not None:
                records.append(OutRecord(self.vitals_topic, item.vitals.key(), encode(item.vitals)))
                continue
            rejection = item.rejection
            assert rejection is not None
            log.warning(
                "rejected JSON vitals #%d from %s (item %s, bed %s, %s): %s",
                sequence,
                peer,
                "body" if item.index is None else item.index,
                rejection.bed_id or "unknown",
                rejection.kind.value,
                rejection.reason,
            )
            headers = [("peer", peer)] + ([("http-item-index", str(item.index))] if item.index is not None else [])
            letter = dead_letter(
                listener=HTTP_LISTENER, sequence=sequence, raw=item.raw, rejection=rejection, now=now, headers=headers
            )
            records.append(OutRecord(self.dead_letter_topic, letter.key, encode(letter)))
            errors.append({"index": item.index, "reason": rejection.reason, "kind": rejection.kind.value})
        try:
            await self._store(records)
        except StoreError as exc:
            self.stats.store_failures += 1
            log.error("could not store JSON vitals from %s; answering 503 so they are resent: %s", peer, exc)
            return web.json_response(
                {"error": "could not store the vitals (message bus unavailable); resend them", "accepted": 0},
                status=503,
                headers={"Retry-After": "5"},
            )
        accepted = len(items) - len(errors)
        self.stats.json_accepted += accepted
        self.stats.json_rejected += len(errors)
        self.stats.vitals_published += accepted
        self.stats.dead_letters += len(errors)
        if not errors:
            return web.json_response({"accepted": accepted, "rejected": 0}, status=202)
        unparseable = len(errors) == 1 and items[0].index is None
        detail = (
            "the body could not be read as vitals; nothing was published"
            if unparseable
            else f"{accepted} valid item(s) were published; fix and resend only the rejected ones"
        )
        body = {"accepted": accepted, "rejected": len(errors), "errors": errors, "detail": detail}
        return web.json_response(body, status=400 if unparseable else 422)

    async def _refuse_large_body(self, peer: str, declared: int | None) -> web.Response:
        limit = self.settings.vitals_max_message_bytes
        size = f"{declared} bytes" if declared is not None else "more bytes"
        rejection = VitalsRejected(
            RejectKind.TOO_LARGE, f"body of {size} exceeds {limit} bytes (ICU_VITALS_MAX_MESSAGE_BYTES)"
        )
        sequence = self._next_sequence(HTTP_LISTENER)
        log.warning("rejected JSON vitals #%d from %s (body, too-large): %s", sequence, peer, rejection.reason)
        letter = dead_letter(
            listener=HTTP_LISTENER,
            sequence=sequence,
            raw=None,
            rejection=rejection,
            now=self.clock(),
            headers=[("peer", peer)],
            value_size=declared,
        )
        try:
            await self._store([OutRecord(self.dead_letter_topic, letter.key, encode(letter))])
        except StoreError as exc:
            self.stats.store_failures += 1
            log.error("could not store the dead letter of an oversized body from %s: %s", peer, exc)
            return web.json_response({"error": "message bus unavailable; retry"}, status=503)
        self.stats.json_rejected += 1
        self.stats.dead_letters += 1
        return web.json_response(
            {"accepted": 0, "rejected": 1, "errors": [{"index": None, "reason": rejection.reason}]}, status=413
        )


def _ack_bytes(decision: Hl7Decision, ack: str) -> bytes:
    codec = decision.header.codec if decision.header else "utf-8"
    return ack.encode(codec, errors="replace")


def observe(observability: Observability, service: VitalsIngest) -> asyncio.Task[None]:
    """Health and Prometheus metrics of the vitals ingest. Returns the heartbeat task (cancel it
    on exit): it ticks from the event loop, so a blocked loop fails /healthz."""
    stats = service.stats

    async def beat() -> None:
        while True:
            observability.health.tick()
            await asyncio.sleep(1.0)

    observability.health.check(
        "listeners", lambda: (service.mllp_port is not None or service.http_port is not None, "Kafka connected first")
    )
    observability.counter_from(
        "icu_vitals_ingest_events",
        "Vitals ingest counters: HL7 messages and JSON items accepted/rejected, vitals published, store and auth "
        "failures.",
        lambda: [((name,), float(value)) for name, value in asdict(stats).items() if name != "dead_letters"],
        ("event",),
    )
    observability.counter_from("icu_dead_letters", "Records sent to the dead-letter topic.",
                               lambda: [((STAGE,), float(stats.dead_letters))], ("stage",))  # fmt: skip
    return asyncio.get_running_loop().create_task(beat(), name="health-heartbeat")
