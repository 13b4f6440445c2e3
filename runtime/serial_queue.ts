/**
 * A queue that runs asynchronous tasks one at a time, in the order they were added: for objects
 * whose calls share state across an `await` (a program's buffers hold one call's inputs and
 * outputs from upload to readback), so overlapping calls wait for each other instead of mixing.
 *
 * @module
 */

/**
 * Runs tasks one after another. A task added while the queue is idle starts at once, before
 * `run` returns (so its synchronous part, e.g. writing inputs, sees the caller's data as it
 * was at the call); a task added while another is pending starts when all earlier ones have
 * settled. A failing task rejects its own promise only: later tasks still run.
 *
 * ```ts
 * const queue = new SerialQueue();
 * const [a, b] = await Promise.all([queue.run(() => step(1)), queue.run(() => step(2))]);
 * ```
 */
export class SerialQueue {
  /** Settles when the last task added so far has settled. */
  #tail: Promise<unknown> = Promise.resolve();
  #pending = 0;

  /** Number of tasks added and not yet settled (the running one included). */
  get pending(): number {
    return this.#pending;
  }

  /** Whether a task is running or waiting. */
  get busy(): boolean {
    return this.#pending > 0;
  }

  /** Adds `task`; resolves or rejects with its result once it has run. */
  run<T>(task: () => T | Promise<T>): Promise<T> {
    const start = () => {
      try {
        return Promise.resolve(task());
      } catch (e) {
        return Promise.reject(e);
      }
    };
    const idle = this.#pending === 0;
    // Counted before the task starts: a task that adds another makes it wait.
    this.#pending++;
    const result = idle ? start() : this.#tail.then(start, start);
    const settled = result.then(
      () => {
        this.#pending--;
      },
      () => {
        this.#pending--;
      },
    );
    this.#tail = settled;
    return result;
  }

  /** Resolves once every task added so far has settled (never rejects). */
  idle(): Promise<void> {
    return this.#tail.then(() => {});
  }
}
