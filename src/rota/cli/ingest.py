"""``rota ingest APP --from amqp://...|kafka://...``: jobs from a message broker."""

from __future__ import annotations

import asyncio

import click

from rota.telemetry.logs import setup_logging


@click.command()
@click.argument("app_spec", metavar="APP")
@click.option(
    "--from",
    "source",
    required=True,
    help="Broker URL: amqp://user:pass@host:5672/vhost or kafka://host:9092[,host2:9092].",
)
@click.option(
    "--queues",
    "-q",
    default="",
    help="AMQP: comma-separated rota queues to consume (default: the app's task queues).",
)
@click.option("--exchange", default="rota", show_default=True, help="AMQP: the direct exchange.")
@click.option("--no-declare", is_flag=True, help="AMQP: only check the exchange and queues exist.")
@click.option("--topic", default="rota", show_default=True, help="Kafka: topic to consume.")
@click.option("--group", default="rota", show_default=True, help="Kafka: consumer group.")
@click.option(
    "--result-topic", default=None, help="Kafka: publish each job's outcome here (key: job id)."
)
@click.option(
    "--prefetch", default=4000, show_default=True, help="Unacknowledged messages held at once."
)
@click.option(
    "--batch",
    type=int,
    default=None,
    help="Messages per store round trip (default: AMQP 2000, Kafka 500).",
)
@click.option(
    "--processes",
    type=click.IntRange(1, 64),
    default=None,
    help="Consumer processes sharing the source (default: AMQP one per CPU, at most 4; Kafka 1).",
)
@click.option("--log-level", default="INFO", show_default=True)
@click.option("--log-json", is_flag=True, help="One JSON object per log line.")
def ingest(
    app_spec: str,
    source: str,
    queues: str,
    exchange: str,
    no_declare: bool,
    topic: str,
    group: str,
    result_topic: str | None,
    prefetch: int,
    batch: int | None,
    processes: int | None,
    log_level: str,
    log_json: bool,
) -> None:
    """Take jobs for APP (module:app) from RabbitMQ or Kafka (docs/wire-format.md)."""
    from rota.ingest.processes import default_processes, supervise
    from rota.ingest.run import run_ingest
    from rota.ingest.runtime import IngestOptions
    from rota.loader import load_app

    setup_logging(log_level, log_json)
    if batch is None:  # Kafka keeps the batch size it was measured with before
        batch = 500 if source.lower().startswith("kafka") else 2000
    count = default_processes(source) if processes is None else processes
    if count > 1:
        load_app(app_spec)  # a bad APP fails here, once, not in every child
        args = ["ingest", app_spec, "--from", source, "--queues", queues]
        args += ["--exchange", exchange, "--topic", topic, "--group", group]
        args += ["--prefetch", str(prefetch), "--batch", str(batch), "--processes", "1"]
        args += ["--log-level", log_level, *(["--log-json"] if log_json else [])]
        args += [*(["--no-declare"] if no_declare else [])]
        args += [*(["--result-topic", result_topic] if result_topic else [])]
        raise SystemExit(supervise(args, count))
    app = load_app(app_spec)
    opts = IngestOptions(
        source=source,
        queues=tuple(q.strip() for q in queues.split(",") if q.strip()),
        exchange=exchange,
        declare=not no_declare,
        topic=topic,
        group=group,
        result_topic=result_topic,
        prefetch=max(1, prefetch),
        batch=max(1, min(batch, prefetch)),
    )
    try:
        asyncio.run(run_ingest(app, opts))
    except ImportError as exc:
        extra = "kafka" if source.startswith("kafka") else "amqp"
        raise click.ClickException(f"{exc}: install rota[{extra}]") from None
