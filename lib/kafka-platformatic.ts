import type { BatchTransport, TransportFactory } from './kafka-batcher';

/**
 * @platformatic/kafka as the KafkaBatcher's transport, for the gateway's producer thread: one
 * audit record per request is the heaviest Kafka traffic we have, and this client sends a record
 * for a third to a half of the CPU kafkajs spends (bench/RESULTS.md, "Kafka producers"). The other
 * processes keep kafkajs, whose consumers and admin client we use anyway.
 *
 * Records are partitioned as kafkajs and the Java client do (murmur2 of the key, masked to 31
 * bits), so a tenant's audit entries land on the same partition whichever process wrote them.
 * Retries are short: the batcher keeps, retries and spools a batch that failed, and it should
 * learn soon that Kafka is away.
 */
export function platformaticTransport(brokers: string[], clientId: string): TransportFactory {
  return async () => {
    // An ECMAScript module; this project compiles to CommonJS, which reaches it through import().
    const { Producer, ProduceAcks, compatibilityPartitioner, stringSerializers } = await import('@platformatic/kafka');
    const producer = new Producer({
      clientId, bootstrapBrokers: brokers, serializers: stringSerializers, acks: ProduceAcks.ALL, partitioner: compatibilityPartitioner,
      autocreateTopics: false, retries: 2, retryDelay: 200, connectTimeout: 3000, timeout: 10_000,
    });
    const transport: BatchTransport = {
      async send(topicMessages) {
        const messages = [];
        for (const { topic, messages: batch } of topicMessages) {
          for (const m of batch) messages.push({ topic, key: m.key as string, value: m.value as string, headers: m.headers as Record<string, string> | undefined });
        }
        await producer.send({ messages });
      },
      close: () => producer.close(),
    };
    return transport;
  };
}
