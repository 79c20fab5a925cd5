/**
 * Runs jobs one at a time, in the order they arrive. The server has one model and the model one
 * runner (one KV cache), so generations cannot overlap; requests that come while one runs wait here
 * instead of being turned away. A job that throws rejects only its own promise: the queue goes on.
 */
export class FifoQueue {
  /** Settles when the last job queued so far has finished; never rejects. */
  private tail: Promise<void> = Promise.resolve();
  private count = 0;

  /** Jobs waiting or running. */
  get size(): number { return this.count; }

  run<T>(job: () => Promise<T>): Promise<T> {
    this.count++;
    const done = this.tail.then(job).finally(() => { this.count--; });
    this.tail = done.then(() => {}, () => {});
    return done;
  }

  /** Resolves once every job queued so far has finished (a clean shutdown waits for this). */
  idle(): Promise<void> { return this.tail; }
}
