"""How large a body `guard ingest` can take: its own limit, the producer's and the topic's agree.

A body the door accepts must fit in one produce request and in one record of the topic. The record
carries more than the body: its key (the campaign id, at most 256 characters), the campaign id the
door may add to the body, and, in the dead-letter topic, the reason and source headers. So the
producer's request limit is the body limit plus RECORD_OVERHEAD_BYTES, and a topic whose
`max.message.bytes` is smaller than that lowers the door's limit (one warning at start-up):
too large is 413 at the door, never a broker error passed off as Kafka being away.
"""

from __future__ import annotations

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from guard.runtime.kafka import client_options
from guard.runtime.settings import KafkaSettings

#: room per record beyond the body: key <= 1 KiB, an added campaign id <= 2 KiB (JSON-escaped),
#: dead-letter headers <= 5 KiB (a reason of 1,000 characters), the record batch's own ~100 bytes
RECORD_OVERHEAD_BYTES = 16 * 1024
MAX_MESSAGE_BYTES = "max.message.bytes"


def producer_request_size(max_body_bytes: int) -> int:
    """The producer's `max_request_size`: any body the door accepts, with its key and headers."""
    return max_body_bytes + RECORD_OVERHEAD_BYTES


def door_limit(max_body_bytes: int, topic_limit: int | None) -> int:
    """The largest body the door accepts: the setting, lowered to what one record of the topic holds."""
    if topic_limit is None:
        return max_body_bytes
    return max(0, min(max_body_bytes, topic_limit - RECORD_OVERHEAD_BYTES))


async def topic_message_limit(kafka: KafkaSettings, topic: str) -> int | None:
    """The topic's `max.message.bytes` as the brokers report it; None when they do not say
    (the embedded test broker lists only the configs given at creation)."""
    admin = AIOKafkaAdminClient(**client_options(kafka))
    await admin.start()
    try:
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic)])
    finally:
        await admin.close()
    for response in responses:
        for error_code, _message, _type, name, entries, *_ in response.resources:
            if name != topic or error_code != 0:
                continue
            for entry in entries:
                if entry[0] == MAX_MESSAGE_BYTES and str(entry[1]).isdigit():
                    return int(entry[1])
    return None
