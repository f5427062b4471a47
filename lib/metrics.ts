import client from 'prom-client';

/** A registry per process, with Node's default metrics and the process label. */
export function createMetricsRegistry(processName: string): client.Registry {
  const registry = new client.Registry();
  registry.setDefaultLabels({ process: processName });
  client.collectDefaultMetrics({ register: registry });
  return registry;
}

export { client as prom };
