"""Kafka connection code shared by the collector, the sink, the scorer and the tests.

Topics are created here, explicitly, with partitions and retention from settings: the local broker
runs with ``auto.create.topics.enable=false`` so a typo in a topic name fails loudly.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from fireman_common.settings import KafkaSettings

log = logging.getLogger(__name__)


def admin_client(settings: KafkaSettings, timeout_ms: int | None = None) -> KafkaAdminClient:
    timeout = timeout_ms or settings.request_timeout_ms
    return KafkaAdminClient(
        bootstrap_servers=settings.bootstrap_servers,
        client_id="fireman-admin",
        request_timeout_ms=timeout,
        bootstrap_timeout_ms=timeout,
    )


def broker_reachable(settings: KafkaSettings, timeout_ms: int = 2000) -> bool:
    """True when a metadata request to the cluster succeeds."""
    try:
        admin = admin_client(settings, timeout_ms=timeout_ms)
    except KafkaError:
        return False
    try:
        admin.list_topics()
        return True
    except KafkaError:
        return False
    finally:
        admin.close()


def ensure_topics(
    settings: KafkaSettings, topics: list[str] | None = None, partitions: int | None = None
) -> list[str]:
    """Create the missing topics; returns the names created. Existing topics are left as they are."""
    wanted = topics if topics is not None else settings.topics()
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        missing = [name for name in wanted if name not in existing]
        new_topics = [
            NewTopic(
                name=name,
                num_partitions=partitions or settings.partitions,
                replication_factor=settings.replication_factor,
                topic_configs={"retention.ms": str(settings.retention_ms)},
            )
            for name in missing
        ]
        if new_topics:
            # Another process may win the race; the topic then exists, which is all we need.
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics(new_topics)
            log.info("created topics %s", ", ".join(missing))
        return missing
    finally:
        admin.close()


def delete_topics(settings: KafkaSettings, topics: list[str]) -> None:
    admin = admin_client(settings)
    try:
        existing = set(admin.list_topics())
        doomed = [name for name in topics if name in existing]
        if doomed:
            admin.delete_topics(doomed)
    finally:
        admin.close()


def make_producer(settings: KafkaSettings, **overrides: Any) -> KafkaProducer:
    """A producer that only reports success once every in-sync replica has the record."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "acks": "all",
        "linger_ms": 5,
        "batch_size": 256 * 1024,
        "max_request_size": 8 * 1024 * 1024,
        "request_timeout_ms": settings.request_timeout_ms,
        "bootstrap_timeout_ms": settings.request_timeout_ms,
        "retries": 5,
    }
    options.update(overrides)
    return KafkaProducer(**options)


def make_consumer(
    settings: KafkaSettings, group_id: str, topics: list[str], **overrides: Any
) -> KafkaConsumer:
    """A consumer that never commits on its own: callers commit after their outputs are durable."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_servers,
        "group_id": group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": "earliest",
        "request_timeout_ms": max(settings.request_timeout_ms, 31_000),
        "bootstrap_timeout_ms": settings.request_timeout_ms,
        # kafka-python's default (45 s) left a SIGKILLed sink's partitions unread for 45 s.
        "session_timeout_ms": settings.session_timeout_ms,
        "max_poll_records": 5000,
        "fetch_max_bytes": 32 * 1024 * 1024,
        "max_partition_fetch_bytes": 8 * 1024 * 1024,
    }
    options.update(overrides)
    consumer = KafkaConsumer(**options)
    consumer.subscribe(topics)
    return consumer
