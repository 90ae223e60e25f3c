import { Client, Connection } from '@temporalio/client';
import type { Config } from '../config.js';

export async function connectClient(config: Config): Promise<Client> {
  const connection = await Connection.connect({ address: config.temporal.address });
  return new Client({ connection, namespace: config.temporal.namespace });
}
