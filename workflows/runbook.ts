import {
  ActivityCancellationType,
  type ActivityOptions,
  ApplicationFailure,
  CancellationScope,
  condition,
  isCancellation,
  defineQuery,
  defineSignal,
  defineUpdate,
  proxyActivities,
  setHandler,
  sleep,
  upsertMemo,
  workflowInfo,
} from '@temporalio/workflow';
import { RUNBOOK_MEMO_KEY, type RunbookInput, type RunRecord, type RunState, type StepDecision, type StepRecord } from '../lib/workflow-runbooks';

/**
 * patched() id of runbooks whose abort waits for the step under way to settle before undoing it
 * (WAIT_CANCELLATION_COMPLETED); runs started before it replay as they ran.
 */
export const ABORT_WAITS_FOR_STEP = 'abort-waits-for-step';
/** patched() id of runbooks that report an undo that failed for good (state FAILED, an alert) instead of failing with no state. */
export const UNDO_FAILURE_REPORTED = 'undo-failure-reported';
/** patched() id of runbooks whose clean-up after a failure or an abort does not wait for a resume. */
export const CLEANUP_WHILE_PAUSED = 'cleanup-while-paused';

/** An activity an abort waits for: it is cancelled, and the workflow goes on once it has settled. */
export const SETTLED: Pick<ActivityOptions, 'cancellationType'> = { cancellationType: ActivityCancellationType.WAIT_CANCELLATION_COMPLETED };

/**
 * A runbook's activities under its options, three ways: `acts` as given; `settled`, which an abort
 * waits for (ABORT_WAITS_FOR_STEP); `undo`, retried for about five minutes so an undo outlasts a
 * blip (UNDO_FAILURE_REPORTED). Proxies only: no command until an activity is called.
 */
export function runbookActivities<A extends object>(options: ActivityOptions) {
  return {
    acts: proxyActivities<A>(options),
    settled: proxyActivities<A>({ ...options, ...SETTLED }),
    undo: proxyActivities<A>({ ...options, retry: { ...options.retry, initialInterval: '1 second', backoffCoefficient: 2, maximumInterval: '30 seconds', maximumAttempts: 15 } }),
  };
}

/** What went wrong, as the activity said it ('Activity task failed' names only the wrapper). */
export const causeMessage = (err: unknown): string => ((err as { cause?: Error }).cause ?? (err as Error)).message;

export const runbookQuery = defineQuery<RunRecord>('flowgate.runbook');
/** Updates, not signals: the approver learns at once whether the decision was taken or refused, and why. */
export const approveStepUpdate = defineUpdate<StepRecord, [StepDecision]>('approveStep');
export const rejectStepUpdate = defineUpdate<StepRecord, [StepDecision]>('rejectStep');
export const pauseSignal = defineSignal('pause');
export const resumeSignal = defineSignal('resume');

const events = proxyActivities<{ publishRunbookEvent(e: { run_id: string; type: string; data: Record<string, unknown> }): Promise<void> }>({
  startToCloseTimeout: '30 seconds',
  retry: { maximumAttempts: 5 },
});

export type ApprovalGate = {
  roles: string[];
  timeoutMs: number;
  /** `onWarn` runs this long before the expiry unless decided by then; default a tenth of the timeout, at most an hour. */
  warnBeforeMs?: number;
  /** Default: a `runbook.approval_expiring` event on Kafka `workflow.events`. */
  onWarn?: () => Promise<unknown>;
  /** Refuses a decision whose payload does not fit this gate (throw with the reason). */
  checkPayload?: (payload: Record<string, unknown> | undefined) => void;
};

/**
 * A runbook's run: named steps with their timeline (state, start, end, attempt, a summary,
 * who approved), approval gates, pause/resume between steps, dry runs and measured figures,
 * kept in the memo (readable without a worker) and served by a query.
 */
export class Runbook {
  readonly record: RunRecord;
  private paused = false;
  /** Set when an abort reached an open gate: decisions are refused from then on. */
  private aborted = false;
  private gate?: { step: string; roles: string[]; expiresAt: number; checkPayload?: ApprovalGate['checkPayload']; decision?: { kind: 'approve' | 'reject'; d: StepDecision } };

  constructor(name: string, steps: string[], private readonly input: RunbookInput) {
    this.record = {
      runbook: name, requested_by: input.requested_by, dry_run: input.dry_run, state: 'RUNNING',
      steps: steps.map((s) => ({ name: s, state: 'pending', attempt: 0 })), figures: {}, last_update: new Date().toISOString(),
    };
    setHandler(runbookQuery, () => this.record);
    setHandler(pauseSignal, () => { this.paused = true; this.setState(this.gate ? 'AWAITING_APPROVAL' : 'PAUSED'); });
    setHandler(resumeSignal, () => { this.paused = false; this.setState(this.gate ? 'AWAITING_APPROVAL' : 'RUNNING'); });
    // Answers once the step's record shows the decision (approved_by or rejected_by).
    const decide = (kind: 'approve' | 'reject') => async (d: StepDecision) => {
      // No gate: a decision an older worker took after an abort, replayed here (validators do not
      // run on replay): its answer is the step as the abort left it.
      if (!this.gate) return this.stepOf(d.step);
      this.gate.decision = { kind, d };
      await condition(() => this.stepOf(d.step).state !== 'awaiting_approval');
      return this.stepOf(d.step);
    };
    setHandler(approveStepUpdate, decide('approve'), { validator: (d) => this.validateApproval(d) });
    setHandler(rejectStepUpdate, decide('reject'), { validator: (d) => this.validate(d) });
    this.save();
  }

  get dryRun(): boolean {
    return this.input.dry_run;
  }

  /** Refuses a decision before it is recorded: wrong step, expired, the requester, or a role not allowed (an approval also: a payload the gate refuses). */
  private validate(d: StepDecision): void {
    if (this.aborted) throw new Error(`the run is being aborted: step ${d.step} no longer awaits a decision`);
    const gate = this.gate;
    if (!gate || gate.step !== d.step || gate.decision) throw new Error(`step ${d.step} is not awaiting approval`);
    if (Date.now() >= gate.expiresAt) throw new Error(`the approval of ${d.step} expired at ${new Date(gate.expiresAt).toISOString()}`);
    if (d.approver === this.input.requested_by) throw new Error('the requester of a run may not approve it');
    if (!gate.roles.includes(d.role)) throw new Error(`role ${d.role} may not approve ${d.step}; one of ${gate.roles.join(', ')} may`);
  }

  private validateApproval(d: StepDecision): void {
    this.validate(d);
    this.gate!.checkPayload?.(d.payload);
  }

  /**
   * Runs one step once the run is not paused; its record shows running, then completed or failed.
   * `whilePaused`: a clean-up after a failure or an abort, which runs at once, paused or not.
   */
  async step<T>(name: string, fn: () => Promise<T>, summary?: (r: T) => string, opts: { whilePaused?: boolean } = {}): Promise<T> {
    if (!opts.whilePaused) await condition(() => !this.paused);
    const s = this.stepOf(name);
    this.update(name, { state: 'running', started_at: new Date().toISOString(), ended_at: undefined, attempt: s.attempt + 1 });
    try {
      const result = await fn();
      this.update(name, { state: 'completed', ended_at: new Date().toISOString(), output: summary?.(result) });
      return result;
    } catch (err) {
      this.update(name, { state: 'failed', ended_at: new Date().toISOString(), output: messageOf(err) });
      throw err;
    }
  }

  /** Waits until the run is not paused (cancellable: an abort meanwhile ends the wait). */
  async whenRunning(): Promise<void> {
    await condition(() => !this.paused);
  }

  /** A step a dry run plans but does not do. */
  skip(name: string, output: string): void {
    this.update(name, { state: 'skipped', output });
  }

  /** Marks a completed step undone (its rollback ran). */
  rolledBack(name: string, output: string): void {
    this.update(name, { state: 'rolled_back', output });
  }

  /**
   * Waits for an approve or reject of `name` from an allowed role, not the requester, before the
   * expiry (which rejects). A dry run plans the gate without waiting.
   */
  async approval(name: string, gate: ApprovalGate): Promise<StepDecision | undefined> {
    if (this.dryRun) {
      this.skip(name, `dry run: would wait for an approval by ${gate.roles.join(' or ')}`);
      return undefined;
    }
    await condition(() => !this.paused);
    const expiresAt = Date.now() + gate.timeoutMs;
    this.gate = { step: name, roles: gate.roles, expiresAt, checkPayload: gate.checkPayload };
    this.update(name, { state: 'awaiting_approval', started_at: new Date().toISOString(), attempt: 1, approval: { roles: gate.roles, expires_at: new Date(expiresAt).toISOString() } });
    this.setState('AWAITING_APPROVAL');
    const warning = new CancellationScope();
    const warnBeforeMs = gate.warnBeforeMs ?? Math.min(3600_000, gate.timeoutMs / 10);
    const onWarn = gate.onWarn ?? (() => events.publishRunbookEvent({
      run_id: workflowInfo().workflowId, type: 'runbook.approval_expiring', data: { step: name, expires_at: new Date(expiresAt).toISOString(), roles: gate.roles },
    }));
    if (warnBeforeMs > 0 && gate.timeoutMs > warnBeforeMs) {
      void warning.run(async () => {
        await sleep(gate.timeoutMs - warnBeforeMs);
        await onWarn();
      }).catch(() => undefined);
    }
    let decided: boolean;
    try {
      decided = await condition(() => this.gate?.decision !== undefined, gate.timeoutMs);
    } catch (err) {
      // An abort closes the gate at once: a decision sent while the run undoes its steps is
      // refused instead of waiting for the run to end, and one already taken gets its answer.
      // The record changes in memory only (no command, so histories replay); the undo's or the
      // finish's save carries it.
      warning.cancel();
      this.gate = undefined;
      if (isCancellation(err)) {
        this.aborted = true;
        Object.assign(this.stepOf(name), { state: 'failed', ended_at: new Date().toISOString(), output: 'aborted while awaiting approval' });
      }
      throw err;
    }
    warning.cancel();
    const decision = this.gate.decision;
    this.gate = undefined;
    const ended_at = new Date().toISOString();
    const approval = { roles: gate.roles, expires_at: new Date(expiresAt).toISOString() };
    if (!decided || !decision) {
      this.update(name, { state: 'failed', ended_at, output: 'approval expired', approval });
      throw ApplicationFailure.nonRetryable(`the approval of ${name} expired`, 'ApprovalExpired', { step: name });
    }
    const { kind, d } = decision;
    if (kind === 'reject') {
      this.update(name, { state: 'failed', ended_at, output: `rejected by ${d.approver}`, approval: { ...approval, rejected_by: d.approver, comment: d.comment } });
      throw ApplicationFailure.nonRetryable(`${name} rejected by ${d.approver}`, 'ApprovalRejected', { step: name, approver: d.approver, comment: d.comment });
    }
    this.update(name, { state: 'completed', ended_at, output: `approved by ${d.approver}`, approval: { ...approval, approved_by: d.approver, comment: d.comment } });
    this.setState(this.paused ? 'PAUSED' : 'RUNNING');
    return d;
  }

  figure(name: string, value: number): void {
    this.record.figures[name] = value;
    this.save();
  }

  /** The final record; the state says how it ended. */
  finish(state: Extract<RunState, 'COMPLETED' | 'FAILED' | 'ABORTED' | 'ROLLED_BACK'>, error?: unknown): RunRecord {
    if (error !== undefined) this.record.error = messageOf(error);
    this.setState(state);
    return this.record;
  }

  private stepOf(name: string): StepRecord {
    const s = this.record.steps.find((x) => x.name === name);
    if (!s) throw ApplicationFailure.nonRetryable(`runbook ${this.record.runbook} has no step ${name}`, 'UnknownStep');
    return s;
  }

  private update(name: string, patch: Partial<StepRecord>): void {
    Object.assign(this.stepOf(name), patch);
    this.save();
  }

  private setState(state: RunState): void {
    this.record.state = state;
    this.save();
  }

  private save(): void {
    this.record.last_update = new Date().toISOString();
    upsertMemo({ [RUNBOOK_MEMO_KEY]: this.record });
  }
}

const messageOf = (err: unknown): string => {
  const e = err as { cause?: { message?: string }; message?: string };
  return e.cause?.message ?? e.message ?? String(err);
};
