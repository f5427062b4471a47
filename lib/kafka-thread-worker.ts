import { parentPort, workerData } from 'node:worker_threads';
import { KafkaBatcher } from './kafka-batcher';
import { platformaticTransport } from './kafka-platformatic';
import { createLogger } from './logger';
import type { FromProducer, ProducerThreadOptions, ToProducer } from './kafka-thread';

/** The producer thread of lib/kafka-thread.ts: a KafkaBatcher (over @platformatic/kafka) fed by the main thread's messages. */

const STATS_MS = 250;
const opts = workerData as ProducerThreadOptions;
const port = parentPort!;
const logger = createLogger(opts.service, opts.logLevel).child({ thread: 'kafka-producer' });
const batcher = new KafkaBatcher(platformaticTransport(opts.brokers, opts.clientId), logger, {
  lingerMs: opts.lingerMs, maxBatch: opts.maxBatch, maxQueued: opts.maxQueued, spoolFile: opts.spoolFile,
});
const recovered = batcher.recover();
if (recovered) logger.warn({ recovered, file: opts.spoolFile }, 'records left in the spool by a previous run are sent again');

const report = () => port.postMessage({ type: 'stats', queued: batcher.queued, dropped: batcher.dropped } satisfies FromProducer);
const stats = setInterval(report, STATS_MS);

port.on('message', (m: ToProducer) => {
  if (m.type === 'records') {
    for (let i = 0; i < m.values.length; i++) void batcher.sendJson(m.topics[i]!, m.keys[i]!, m.values[i]!);
    return;
  }
  clearInterval(stats);
  void batcher.close(m.ms).finally(() => {
    report();
    port.postMessage({ type: 'closed' } satisfies FromProducer);
  });
});
