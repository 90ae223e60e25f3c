import { Worker, type Transferable } from 'node:worker_threads';

/** What a thread sends once it has started: ready, or why it could not start. */
export type StartReply = { id: 0; ready: true } | { id: 0; error: string; name: string };

/** A thread that reported it could not start; `causeName` is the name of its error there. */
export class ThreadStartError extends Error {
  constructor(
    message: string,
    readonly causeName: string,
  ) {
    super(message);
    this.name = 'ThreadStartError';
  }
}

/**
 * Requests to a worker thread, answered by id: `{id, ...request}` goes in, `{id, ...reply}`
 * comes back (id 0 is the thread's start message, see `StartReply`). The thread keeps the
 * process alive only while its start or a call is awaited. When it dies, every call waiting
 * on it fails, and so does every later one (`failure`).
 */
export class ThreadChannel<Reply extends { id: number }> {
  readonly thread: Worker;
  /** Resolves once the thread says it is ready; rejects if it cannot start or dies first. */
  readonly ready: Promise<void>;
  private readonly pending = new Map<number, { done: Promise<Reply>; resolve: (r: Reply) => void; reject: (e: Error) => void }>();
  private nextId = 1;
  private failed: Error | undefined;

  /** `what` names the thread in errors, e.g. "inference thread". */
  constructor(entry: URL, workerData: unknown, what: string) {
    this.thread = new Worker(entry, { workerData });
    let up!: () => void;
    let down!: (err: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      up = resolve;
      down = reject;
    });
    // Nobody may be waiting for it: a thread that cannot start fails the calls instead.
    this.ready.catch(() => undefined);
    this.thread.on('message', (msg: Reply | StartReply) => {
      if (msg.id === 0) {
        const start = msg as StartReply;
        return 'ready' in start ? up() : down(new ThreadStartError(start.error, start.name));
      }
      const waiter = this.pending.get(msg.id);
      if (!waiter) return;
      this.pending.delete(msg.id);
      waiter.resolve(msg as Reply);
      this.unrefIfIdle();
    });
    const fail = (err: Error): void => {
      this.failed ??= err;
      down(err);
      for (const waiter of this.pending.values()) waiter.reject(err);
      this.pending.clear();
    };
    this.thread.on('error', fail);
    this.thread.on('exit', (code) => fail(new Error(`${what} exited (${code})`)));
    // Referenced while it starts (whoever waits for it may have nothing else running), then
    // only while calls wait for answers.
    this.ready.then(() => this.unrefIfIdle(), () => undefined);
  }

  /** Why the thread can take no more calls (it died), if it cannot. */
  failure(): Error | undefined {
    return this.failed;
  }

  call(message: object, transfer?: readonly Transferable[]): Promise<Reply> {
    if (this.failed) return Promise.reject(this.failed);
    const id = this.nextId++;
    let resolve!: (r: Reply) => void;
    let reject!: (e: Error) => void;
    const done = new Promise<Reply>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    this.pending.set(id, { done, resolve, reject });
    this.thread.ref();
    this.thread.postMessage({ id, ...message }, transfer);
    return done;
  }

  /** Waits for the calls in flight, then stops the thread. */
  async close(): Promise<void> {
    await Promise.allSettled([...this.pending.values()].map((w) => w.done));
    await this.thread.terminate();
  }

  private unrefIfIdle(): void {
    if (this.pending.size === 0) this.thread.unref();
  }
}
