import { defineQuery, setHandler, upsertMemo, upsertSearchAttributes } from '@temporalio/workflow';
import { PROGRESS_MEMO_KEY, SA, type ProgressRecord } from '../lib/workflow-search-attributes';

export const progressQuery = defineQuery<ProgressRecord>('flowgate.progress');

/**
 * The one way a workflow reports where it is. Each change goes to the memo and search
 * attributes (readable by describe without a worker) and is served by a query as well.
 */
export class Progress {
  private record: ProgressRecord;

  constructor(readonly steps: string[]) {
    this.record = { current_step: null, progress: 0, steps, last_update: new Date().toISOString(), waiting_for: null };
    setHandler(progressQuery, () => this.record);
  }

  /** Runs one named step; the step and the share of steps done are recorded before and after. */
  async step<T>(name: string, fn: () => Promise<T>): Promise<T> {
    this.update({ current_step: name, waiting_for: null });
    const result = await fn();
    const done = this.steps.indexOf(name) + 1;
    this.update({ progress: Math.round((100 * Math.max(done, 0)) / Math.max(this.steps.length, 1)) });
    return result;
  }

  /** Marks the workflow as waiting (for a signal or an approval) while `fn` runs. */
  async waitingFor<T>(kind: 'signal' | 'approval', name: string, fn: () => Promise<T>): Promise<T> {
    this.update({ waiting_for: { kind, name, since: new Date().toISOString() } });
    try {
      return await fn();
    } finally {
      this.update({ waiting_for: null });
    }
  }

  /** The business state a workflow reports besides its steps (a payment's PENDING … REFUNDED). */
  setState(state: string): void {
    if (this.record.state !== state) this.update({ state });
  }

  get state(): string | null {
    return this.record.state ?? null;
  }

  complete<T>(result: T): T {
    this.update({ current_step: null, progress: 100, waiting_for: null });
    return result;
  }

  private update(patch: Partial<ProgressRecord>): void {
    this.record = { ...this.record, ...patch, last_update: new Date().toISOString() };
    upsertMemo({ [PROGRESS_MEMO_KEY]: this.record });
    upsertSearchAttributes([
      { key: SA.step, value: this.record.current_step ?? '' },
      { key: SA.progress, value: this.record.progress },
      { key: SA.waitingFor, value: this.record.waiting_for ? `${this.record.waiting_for.kind}:${this.record.waiting_for.name}` : '' },
    ]);
  }
}
