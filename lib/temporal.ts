import { Client, Connection } from '@temporalio/client';

/** True when Temporal's frontend answers (a readiness check); works for Client and NativeConnection. */
export async function temporalHealthy(conn: { workflowService: { getSystemInfo(req: object): Promise<unknown> } }): Promise<boolean> {
  await conn.workflowService.getSystemInfo({});
  return true;
}

export async function connectTemporal(address: string, namespace: string): Promise<Client> {
  const connection = await Connection.connect({ address, connectTimeout: 5000 });
  return new Client({ connection, namespace });
}
