"""``--processes``: the defaults per broker (the supervision itself runs against RabbitMQ in
``test_amqp``)."""

from __future__ import annotations

import os

from rota.ingest.processes import default_processes


def test_amqp_runs_one_consumer_per_cpu_and_kafka_one() -> None:
    assert default_processes("amqp://guest:guest@127.0.0.1:5672/") == min(os.cpu_count() or 1, 4)
    assert default_processes("AMQPS://h/v") == min(os.cpu_count() or 1, 4)
    assert default_processes("kafka://127.0.0.1:9092") == 1
