// A Node producer of rota jobs over RabbitMQ (amqplib), as a PHP or Go one would be:
// node producer.js AMQP_URL COUNT PREFIX  -> publishes COUNT ingest.add jobs with
// message ids PREFIX-i, each asking for a reply on an exclusive queue, plus one invalid
// message; prints one JSON line per reply received, then "done".
const amqp = require("amqplib");

async function main() {
  const [url, count, prefix] = [process.argv[2], Number(process.argv[3]), process.argv[4]];
  const conn = await amqp.connect(url);
  const ch = await conn.createConfirmChannel();
  const { queue: replyTo } = await ch.assertQueue("", { exclusive: true });
  let waiting = count + 1;
  await ch.consume(replyTo, (msg) => {
    const body = JSON.parse(msg.content.toString());
    console.log(JSON.stringify({ correlation_id: msg.properties.correlationId, ...body }));
    if (--waiting === 0) {
      console.log("done");
      conn.close().then(() => process.exit(0));
    }
  }, { noAck: true });
  const publish = (body, id) => ch.publish("rota", "default", Buffer.from(JSON.stringify(body)), {
    messageId: id, correlationId: "corr-" + id, replyTo, persistent: true,
    contentType: "application/json",
  });
  for (let i = 0; i < count; i++) publish({ task: "ingest.add", args: [i, 1000] }, `${prefix}-${i}`);
  publish({ task: "ingest.add", args: ["only one"] }, `${prefix}-invalid`);
  await ch.waitForConfirms();
}

main().catch((err) => { console.error(err); process.exit(1); });
