/**
 * The NDJSON events of `runbook ... --json` (README "Output") as tests read them back: one type for every event
 * type, each field optional but typed, so a test can look at `e.status` of any event it found without casts.
 * (src/engine/events.ts has the exact per-type shapes the engine emits.)
 */
export interface CliEvent {
  type: string;
  time: string;
  run_id?: string;
  runbook?: string;
  mode?: string;
  host?: string;
  batch?: number;
  step?: string;
  phase?: string;
  index?: number;
  status?: string;
  stage?: string;
  code?: number | null;
  attempts?: number;
  timed_out?: boolean;
  duration_ms?: number;
  stdout?: string;
  stderr?: string;
  command?: string;
  message?: string;
  failed_step?: string;
  changed_steps?: string[];
  /** step-end of a step with `register:`: what it registered (its own stdout, not its verify's). */
  register?: { stdout: string; stderr: string; code: number | null };
  /** host-end: the runbook's facts for the host. */
  facts?: Record<string, string>;
  exit_code?: number;
  /** run-start: the host names; run-end: host -> final status. */
  hosts?: string[] | Record<string, string>;
  [field: string]: unknown;
}

/** The events of an NDJSON text (lines that are not whole JSON objects, e.g. of pretty-printed JSON, are skipped). */
export function parseNdjson(s: string): CliEvent[] {
  const out: CliEvent[] = [];
  for (const l of s.split('\n')) {
    if (!l.trim().startsWith('{')) continue;
    try {
      out.push(JSON.parse(l) as CliEvent);
    } catch {
      /* not a whole object on one line */
    }
  }
  return out;
}
