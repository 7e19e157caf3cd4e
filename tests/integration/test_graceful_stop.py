"""A consumer process stopped with SIGTERM finishes its batch, commits, and exits cleanly."""

import signal
import subprocess
import sys
import textwrap
import time
import uuid

from icu.contracts import Topic, encode
from icu.kafka import create_consumer, create_producer
from tests import samples

WORKER = textwrap.dedent(
    """
    import sys
    from icu.contracts import Topic
    from icu.kafka import ConsumeLoop, DeadLetterPublisher, GracefulStop, create_consumer, create_producer
    from icu.settings import KafkaSettings, configure_logging

    configure_logging("INFO")
    settings = KafkaSettings(kafka_bootstrap_servers=sys.argv[1])
    source = sys.argv[2]
    stop = GracefulStop().install()

    def handler(batch):
        print(f"handled {len(batch)}", flush=True)

    loop = ConsumeLoop(
        create_consumer(settings, group_id=sys.argv[3], topics=[source]),
        topics={source: Topic.VITALS},
        handler=handler,
        dead_letters=DeadLetterPublisher(create_producer(settings), sys.argv[4], stage="worker"),
        stop=stop,
    )
    stats = loop.run()
    print(f"stopped after {stats.handled}", flush=True)
    """
)


def test_sigterm_commits_and_exits_zero(kafka_settings):
    prefix = kafka_settings.topic_prefix
    source = Topic.VITALS.full_name(prefix)
    group = f"worker-{uuid.uuid4().hex[:8]}"
    producer = create_producer(kafka_settings)
    for i in range(5):
        producer.send(source, key=b"icu1-bed01", value=encode(samples.vitals(hr=70.0 + i)))
    producer.flush()
    producer.close()

    worker = subprocess.Popen(
        [
            sys.executable,
            "-c",
            WORKER,
            kafka_settings.kafka_bootstrap_servers,
            source,
            group,
            Topic.DEAD_LETTER.full_name(prefix),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    handled = 0
    deadline = time.monotonic() + 30
    while handled < 5 and time.monotonic() < deadline:
        line = worker.stdout.readline()
        if line.startswith("handled"):
            handled += int(line.split()[1])
    assert handled == 5
    worker.send_signal(signal.SIGTERM)
    out, err = worker.communicate(timeout=30)
    assert worker.returncode == 0, err
    assert "stopped after 5" in out
    assert "received SIGTERM" in err

    # Everything handled was committed: the group has nothing left to read.
    consumer = create_consumer(kafka_settings, group_id=group, topics=[source])
    assert consumer.poll(timeout_ms=3000) == {}
    consumer.close()
