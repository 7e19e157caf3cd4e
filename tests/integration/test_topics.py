from confluent_kafka.admin import AdminClient

from icu.contracts import Topic
from infra.settings import TopicsAdminSettings
from infra.topics import TOPIC_SPECS, create_topics, list_topics


def test_create_topics_is_idempotent_and_sets_partitions(broker, topic_prefix):
    settings = TopicsAdminSettings(
        kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix=topic_prefix, topic_partitions=5
    )
    first = create_topics(settings)
    assert {r.name for r in first} == {t.full_name(topic_prefix) for t in Topic}
    assert all(r.created for r in first)
    again = create_topics(settings)
    assert not any(r.created for r in again)
    listed = list_topics(settings)
    assert listed == {r.name: r.partitions for r in first}
    for name, partitions in listed.items():
        bed_keyed = TOPIC_SPECS[Topic(name.split(".", 1)[1])].bed_keyed
        assert partitions == (5 if bed_keyed else 3)


def test_a_third_party_client_sees_every_topic(kafka_settings):
    # librdkafka (via confluent-kafka), not the kafka-python library the project uses.
    admin = AdminClient({"bootstrap.servers": kafka_settings.kafka_bootstrap_servers})
    metadata = admin.list_topics(timeout=10)
    seen = {name: len(meta.partitions) for name, meta in metadata.topics.items()}
    for topic in Topic:
        assert seen[topic.full_name(kafka_settings.topic_prefix)] >= 1


def test_prefixes_keep_deployments_apart(broker, kafka_settings):
    other = TopicsAdminSettings(kafka_bootstrap_servers=broker.bootstrap_servers, topic_prefix="replay-x1")
    assert all(name.startswith(f"{kafka_settings.topic_prefix}.") for name in list_topics(kafka_settings))
    assert not any(name.startswith("replay-x1.") for name in list_topics(other))
