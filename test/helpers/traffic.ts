import { setTimeout as sleep } from 'node:timers/promises';

export interface TrafficResult {
  status: number;
  key: string;
  row: Record<string, unknown>;
  arm?: string;
  version?: number;
  rolloutId?: string;
  predictions?: unknown[];
  /** Round trip on loopback, milliseconds. */
  ms: number;
  error?: string;
}

export interface TrafficOptions {
  url: string;
  token: string;
  model: string;
  /** The row of the i-th request. */
  row: (i: number) => Record<string, unknown>;
  /** Routing key of the i-th request (default: none, so routing is per request). */
  key?: (i: number) => string;
  concurrency?: number;
  /** Pause between a loop's requests, to leave the CPU to the rest of the test. */
  pauseMs?: number;
  /** Stop after this many requests (a bounded loop); default: until stop(). */
  limit?: number;
}

/** A load generator on loopback: `concurrency` loops sending one-row predictions, recording every answer. */
export class Traffic {
  readonly results: TrafficResult[] = [];
  private stopped = false;
  private next = 0;
  private loops: Array<Promise<void>> = [];

  constructor(private readonly opts: TrafficOptions) {}

  start(): this {
    this.loops = Array.from({ length: this.opts.concurrency ?? 2 }, () => this.loop());
    return this;
  }

  /** Resolves when a bounded loop has sent everything, or at once after stop(). */
  async done(): Promise<TrafficResult[]> {
    await Promise.all(this.loops);
    return this.results;
  }

  async stop(): Promise<TrafficResult[]> {
    this.stopped = true;
    return this.done();
  }

  failed(): TrafficResult[] {
    return this.results.filter((r) => r.status !== 200);
  }

  private async loop(): Promise<void> {
    const { url, token, model, row, key, pauseMs = 2, limit } = this.opts;
    while (!this.stopped && (limit === undefined || this.next < limit)) {
      const i = this.next++;
      const body = { instance: row(i), ...(key ? { key: key(i) } : {}) };
      const started = performance.now();
      try {
        const res = await fetch(`${url}/v1/models/${model}:predict`, {
          method: 'POST',
          headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
          body: JSON.stringify(body),
        });
        const json = (await res.json()) as { arm?: string; version?: number; rolloutId?: string; predictions?: unknown[]; error?: string };
        this.results.push({ status: res.status, key: body.key ?? '', row: body.instance, ms: performance.now() - started, ...json });
      } catch (err) {
        this.results.push({ status: 0, key: body.key ?? '', row: body.instance, ms: performance.now() - started, error: (err as Error).message });
      }
      if (pauseMs > 0) await sleep(pauseMs);
    }
  }
}
