/** Statuses shared by the plan, the engine, the journal and the reports (data, no behaviour). */
export type StepStatus = 'skipped' | 'ok' | 'changed' | 'failed' | 'unknown';
/** A step's output kept by `register:` (engine) and rebuilt from the journal (resume). */
export interface Registered {
  stdout: string;
  stderr: string;
  code: number | null;
  /** How the step ended (journals before format 2 lack it). */
  status?: StepStatus;
}

export type HostStatus = 'ok' | 'changed' | 'failed' | 'rolled-back' | 'needs-attention' | 'unreachable' | 'skipped';
export type RunStatus = 'ok' | 'failed' | 'needs-attention' | 'interrupted';
export type Phase = 'preflight' | 'step';
