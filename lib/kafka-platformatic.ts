import type { BatchTransport, TransportFactory } from './kafka-batcher';

/** What every @platformatic/kafka client here starts with: short retries and timeouts. */
const clientOptions = (clientId: string, brokers: string[]) => ({ clientId, bootstrapBrokers: brokers, retries: 2, retryDelay: 200, connectTimeout: 3000, timeout: 10_000 });

/**
 * @platformatic/kafka as the KafkaBatcher's transport, for the gateway's producer thread: one
 * audit record per request is the heaviest Kafka traffic we have, and this client sends a record
 * for a third to a half of the CPU kafkajs spends (bench/RESULTS.md, "Kafka producers"). The other
 * processes keep kafkajs for their producers and consumers.
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
      ...clientOptions(clientId, brokers), serializers: stringSerializers, acks: ProduceAcks.ALL, partitioner: compatibilityPartitioner, autocreateTopics: false,
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

/**
 * Commits offsets for a group with no members in one OffsetCommit request (generation -1, no
 * member id), as Kafka's own admin client does. kafkajs's `admin.setOffsets` instead joins the
 * group with a consumer and waits out a whole fetch (5 s) before leaving, at every process start.
 * The broker refuses it for a group that has members.
 */
export async function commitOffsetsAsAdmin(brokers: string[], groupId: string, topic: string, partitionOffsets: { partition: number; offset: bigint }[]): Promise<void> {
  // An ECMAScript module; this project compiles to CommonJS, which reaches it through import().
  const { Admin } = await import('@platformatic/kafka');
  const admin = new Admin(clientOptions(`flowgate-pin-${groupId}`, brokers));
  try {
    await admin.alterConsumerGroupOffsets({ groupId, topics: [{ name: topic, partitionOffsets }] });
  } finally {
    await admin.close().catch(() => undefined);
  }
}
