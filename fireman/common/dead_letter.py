"""The headers of a dead letter on the DLQ topic, the same whichever consumer wrote it.

The sink and the scorer read ``measurements`` in their own consumer groups and judge each message
on their own terms (the sink can refuse a point InfluxDB rejects that the scorer scored fine), so
a message both refuse is dead-lettered by each: ``dead-lettered-by`` tells the two letters apart.
"""

from __future__ import annotations

ERROR = "error"
DEAD_LETTERED_BY = "dead-lettered-by"
SOURCE_TOPIC = "source-topic"
SOURCE_PARTITION = "source-partition"
SOURCE_OFFSET = "source-offset"


def dead_letter_headers(
    error: str, dead_lettered_by: str, topic: str, partition: int, offset: int
) -> list[tuple[str, bytes]]:
    return [
        (ERROR, error.encode()),
        (DEAD_LETTERED_BY, dead_lettered_by.encode()),
        (SOURCE_TOPIC, topic.encode()),
        (SOURCE_PARTITION, str(partition).encode()),
        (SOURCE_OFFSET, str(offset).encode()),
    ]
