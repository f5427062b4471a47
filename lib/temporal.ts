import { Client, Connection } from '@temporalio/client';

export async function connectTemporal(address: string, namespace: string): Promise<Client> {
  const connection = await Connection.connect({ address, connectTimeout: 5000 });
  return new Client({ connection, namespace });
}

/** True when Temporal's frontend answers. */
export async function temporalHealthy(client: Client): Promise<boolean> {
  try {
    await client.workflowService.getSystemInfo({}, );
    return true;
  } catch {
    return false;
  }
}
