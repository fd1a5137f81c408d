"""Events as other clients write them: a webhook bridge may compress its batches with any of Kafka's
codecs (librdkafka's and the Java client's `compression.type`), and the guard reads them all."""

from __future__ import annotations

import time

CODECS = ("gzip", "snappy", "lz4", "zstd")  # every codec a Kafka record batch can carry


async def test_batches_compressed_with_each_of_kafkas_codecs_are_read(deploy) -> None:
    """One bridge per codec writes a bad campaign's mail and a healthy one's: each bad campaign is paused
    once, no healthy one, and nothing is dead-lettered."""
    S, minute = deploy.Stretch, 60.0
    bad = {codec: f"camp_bad_{codec}" for codec in CODECS}
    healthy = {codec: f"camp_clean_{codec}" for codec in CODECS}
    deploy.campaigns(*bad.values(), *healthy.values())
    assert await deploy.create_input_topic()
    guard = deploy.start()
    await guard.wait_ready(60)
    began = time.time() - 20 * minute
    for codec in CODECS:
        await deploy.produce(
            deploy.history(
                deploy.mail(bad[codec], S(began, began + 15 * minute, deploy.BAD), until=time.time()),
                deploy.mail(healthy[codec], S(began, began + 15 * minute, deploy.HEALTHY), until=time.time()),
            ),
            compression=codec,
        )
    await deploy.settle(guard)
    tally = await deploy.tally()

    assert {codec: tally.calls[bad[codec]] for codec in CODECS} == dict.fromkeys(CODECS, 1), tally
    assert not any(tally.calls[campaign] or tally.outcomes(campaign) for campaign in healthy.values()), tally
    assert (await guard.metrics())("guard_dead_letters_total") == 0
