"""Broker outages for `icu alerts`: say when Kafka is lost and back, and re-create Faust's own topics
when the broker comes back without them.

Faust's clients (aiokafka) reconnect on their own and the consumer group is re-joined, but:

- aiokafka logs every failed connection attempt, several lines every 100 ms, and never says
  when the broker is back. :class:`BrokerWatch` probes the broker every ``probe_s`` and logs
  one line when it becomes unreachable and one when it is reachable again;
  :class:`icu.settings.RepeatFilter` (every service's log) keeps one copy of each repeated
  aiokafka message per 30 s.
- A broker that keeps its data in memory (the embedded broker) loses every topic on restart.
  The operator's ``icu up`` / ``icu topics create`` re-creates the planned topics, but not
  Faust's internal ones (table changelogs, the assignor's leader topic), which Faust declares
  only at start. aiokafka's next metadata refresh would auto-create them with the broker's
  default partition count, and the changed partition count sends the worker into a rebalance
  whose table recovery never ends. So when a probe finds one of them missing, it is created
  again at once with Faust's partition count and configuration. On Apache Kafka a restart
  loses nothing: the topics are there and the probe only watches.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import faust
from aiokafka.admin import AIOKafkaAdminClient, NewTopic  # type: ignore[import-untyped]
from aiokafka.errors import TopicAlreadyExistsError  # type: ignore[import-untyped]
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InternalTopic:
    name: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)


def internal_topics(app: faust.App) -> list[InternalTopic]:
    """Faust's own topics for ``app``: each table's changelog and the assignor's leader topic."""
    topics: list[InternalTopic] = []
    for table in app.tables.values():
        changelog = table.changelog_topic
        config = {"cleanup.policy": "compact", **{k: str(v) for k, v in (changelog.config or {}).items()}}
        partitions = changelog.partitions or app.conf.topic_partitions
        topics.extend(InternalTopic(name, partitions, config) for name in changelog.topics)
    if not app.conf.topic_disable_leader:
        topics.append(InternalTopic(f"{app.conf.id}-__assignor-__leader", 1))
    return topics


class BrokerWatch:
    """Probes the broker; logs loss and return; re-creates Faust's internal topics when lost."""

    def __init__(self, app: faust.App, bootstrap_servers: str, *, probe_s: float = 1.0, timeout_s: float = 5.0,
                 expected: Iterable[str] = ()) -> None:  # fmt: skip
        self.app = app
        self.servers = [s.strip() for s in bootstrap_servers.split(",") if s.strip()]
        self.probe_s = probe_s
        self.timeout_s = timeout_s
        self.expected = list(expected)  # planned topics the worker needs (created by the operator)
        self.down_since: float | None = None
        self.recreated = 0
        self._admin: AIOKafkaAdminClient | None = None
        self._missing_reported: frozenset[str] = frozenset()
        self._miscounted: set[str] = set()

    async def run(self) -> None:
        try:
            while True:
                await self.probe()
                await asyncio.sleep(self.probe_s)
        finally:
            await self._close()

    async def probe(self) -> None:
        try:
            topics = await asyncio.wait_for(self._describe(), self.timeout_s)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # connection refused, timeout, broker errors: all mean "not usable now"
            await self._close()
            if self.down_since is None:
                self.down_since = time.monotonic()
                reason = str(exc) or type(exc).__name__
                log.warning("Kafka broker unreachable at %s (%s); Faust's clients keep retrying, alerts resume "
                            "when it is back", ",".join(self.servers), reason)  # fmt: skip
            return
        if self.down_since is not None:
            log.warning("Kafka broker reachable again at %s after %.1f s", ",".join(self.servers),
                        time.monotonic() - self.down_since)  # fmt: skip
            self.down_since = None
        await self._restore(topics)

    async def _describe(self) -> dict[str, int]:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.servers, request_timeout_ms=int(self.timeout_s * 1000),
                                        **credentials_to_aiokafka_auth(self.app.conf.broker_credentials))  # fmt: skip
            try:
                await admin.start()
            except BaseException:
                await admin.close()
                raise
            self._admin = admin
        # All topics (a metadata request naming none): never auto-creates anything.
        described = await self._admin.describe_topics()
        return {t["topic"]: len(t["partitions"]) for t in described if t.get("error_code", 0) == 0}

    async def _restore(self, existing: dict[str, int]) -> None:
        lost = [t for t in internal_topics(self.app) if t.name not in existing]
        if lost:
            log.warning("the Kafka broker has lost this worker's internal topics %s (an in-memory broker restarted?): "
                        "creating them again", ", ".join(t.name for t in lost))  # fmt: skip
            assert self._admin is not None
            for topic in lost:
                new = NewTopic(topic.name, topic.partitions, self.app.conf.topic_replication_factor or 1,
                               topic_configs=topic.config)  # fmt: skip
                try:
                    response = await self._admin.create_topics([new])
                except TopicAlreadyExistsError:
                    continue
                for _name, code, message in (tuple(e)[:3] for e in getattr(response, "topic_errors", [])):
                    if code not in (0, TopicAlreadyExistsError.errno):
                        log.error("could not create topic %s again: error %s %s", topic.name, code, message)
            self.recreated += len(lost)
        for topic in internal_topics(self.app):
            count = existing.get(topic.name)
            if count is not None and count != topic.partitions and topic.name not in self._miscounted:
                self._miscounted.add(topic.name)
                log.error("internal topic %s has %d partitions, Faust expects %d (auto-created by the broker "
                          "after it lost its topics?): delete it, or restart the worker after `icu topics create`",
                          topic.name, count, topic.partitions)  # fmt: skip
        missing = frozenset(name for name in self.expected if name not in existing)
        if missing and missing != self._missing_reported:
            log.warning("topics %s do not exist (the broker lost them?); waiting for `icu topics create` / `icu up`",
                        ", ".join(sorted(missing)))  # fmt: skip
        elif not missing and self._missing_reported:
            log.info("topics %s exist again", ", ".join(sorted(self._missing_reported)))
        self._missing_reported = missing

    async def _close(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                await admin.close()
            except Exception:  # closing a client of a dead broker must not stop the watch
                log.debug("closing the broker probe failed", exc_info=True)
