/**
 * What a runbook run reports (workflows/runbook.ts keeps it; the Admin API and the CLI read it):
 * one record per step, in the memo under RUNBOOK_MEMO_KEY and from the `flowgate.runbook` query.
 * Types and constants only: workflow code imports this file.
 */
export const RUNBOOK_MEMO_KEY = 'flowgate_runbook';

export type StepState = 'pending' | 'running' | 'awaiting_approval' | 'completed' | 'failed' | 'skipped' | 'rolled_back';
export type RunState = 'RUNNING' | 'PAUSED' | 'AWAITING_APPROVAL' | 'COMPLETED' | 'FAILED' | 'ABORTED' | 'ROLLED_BACK';

export type StepRecord = {
  name: string;
  state: StepState;
  started_at?: string;
  ended_at?: string;
  attempt: number;
  /** A line on what the step did or found (never a secret value). */
  output?: string;
  approval?: { roles: string[]; expires_at: string; approved_by?: string; rejected_by?: string; comment?: string };
};

export type RunRecord = {
  runbook: string;
  requested_by: string;
  dry_run: boolean;
  state: RunState;
  steps: StepRecord[];
  /** Measured figures (RTO, RPO, durations), by name. */
  figures: Record<string, number>;
  last_update: string;
  error?: string;
  /** What the run did instead of a request it could not obey (an abort past a failover's fence). */
  note?: string;
};

/** An approver's decision on a gated step, as the Admin API passes it (identity from the token). */
export type StepDecision = { step: string; approver: string; role: string; comment?: string; payload?: Record<string, unknown> };

/** What a runbook workflow is started with: its parameters and who asked. */
export type RunbookInput<P = Record<string, unknown>> = { params: P; requested_by: string; dry_run: boolean };
