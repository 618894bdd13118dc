"""Jobs from message brokers: ``rota ingest myapp:app --from amqp://...|kafka://...``.

``wire`` (the message format and its validation), ``storing`` (batches into the store,
exactly once by deterministic job ids), ``outcome`` (reply bodies), ``stats`` (what
``rota status`` shows per ingest process) need no broker client; ``amqp`` needs
``rota[amqp]`` (aiormq) and ``kafka`` needs ``rota[kafka]`` (aiokafka).
"""
