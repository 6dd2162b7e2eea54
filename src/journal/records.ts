/**
 * The journal's record schema: every line of a run journal is one of these records, decoded
 * (and checked) once when the file is read. Engine events (minus `output`) are journaled as
 * they are; `journal-open`, `journal-close` and `lock-broken` are journal-only.
 *
 * Versioning: `journal-open` carries `v` (JOURNAL_VERSION). A journal without it was written
 * before the field existed and is version 1, which is the same record shape. A journal of a
 * newer version is refused with a clear error instead of being misread.
 */
import { RunbookError } from '../core/errors.js';
import type { HostStatus, Phase, RunEvent, StepStatus } from '../engine/events.js';

export const JOURNAL_VERSION = 1;

export interface JournalOpenRecord {
  type: 'journal-open';
  time: string;
  v?: number;
  run_id?: string;
  controller?: string;
  pid?: number;
  fsync?: boolean;
  torn_bytes_dropped?: number;
}
export interface JournalCloseRecord {
  type: 'journal-close';
  time: string;
  pid?: number;
  stats?: Record<string, number>;
}
export interface LockBrokenRecord {
  type: 'lock-broken';
  time: string;
  host: string;
  lock_path?: string;
  holder?: { run_id?: string };
  by_controller?: string;
  by_pid?: number;
  by_user?: string;
}

/** Every engine event but `output` is journaled as it is. */
export type JournaledEvent = Exclude<RunEvent, { type: 'output' }>;

export type JournalRecord = JournaledEvent | JournalOpenRecord | JournalCloseRecord | LockBrokenRecord;

// ---------------------------------------------------------------------------------------
// Decoding

type Kind = 'string' | 'int' | 'int|null' | 'object' | 'array' | 'strings';
interface Field {
  kind: Kind;
  required?: boolean;
  /** Allowed values of a string field. */
  oneOf?: readonly string[];
}

const STEP_STATUSES: readonly StepStatus[] = ['skipped', 'ok', 'changed', 'failed', 'unknown'];
const HOST_STATUSES: readonly HostStatus[] = ['ok', 'changed', 'failed', 'rolled-back', 'needs-attention', 'unreachable', 'skipped'];
const PHASES: readonly Phase[] = ['preflight', 'step'];
const STAGES = ['if', 'when', 'unless', 'run', 'verify'] as const;

const req = (kind: Kind, oneOf?: readonly string[]): Field => ({ kind, required: true, ...(oneOf ? { oneOf } : {}) });
const opt = (kind: Kind, oneOf?: readonly string[]): Field => ({ kind, ...(oneOf ? { oneOf } : {}) });

/** The fields of both alternative records: which host, escalation (step, index) and alternative (name, rank). */
const ALTERNATIVE: Record<string, Field> = {
  time: req('string'),
  host: req('string'),
  step: req('string'),
  index: req('int'),
  alternative: req('string'),
  rank: req('int'),
};

/** What recovery and the listings rely on, per record type; other fields pass through unchecked. */
const SCHEMA: Record<JournalRecord['type'], Record<string, Field>> = {
  'journal-open': { time: req('string'), v: opt('int'), run_id: opt('string'), controller: opt('string'), pid: opt('int') },
  'journal-close': { time: req('string'), pid: opt('int'), stats: opt('object') },
  'lock-broken': { time: req('string'), host: req('string'), holder: opt('object'), by_controller: opt('string'), by_pid: opt('int') },
  'run-start': {
    time: req('string'),
    run_id: req('string'),
    runbook: req('string'),
    hosts: req('strings'),
    batches: opt('array'),
    max_failed: opt('int'),
    forks: opt('int'),
    mode: opt('string', ['apply', 'resume', 'rollback']),
    runbook_file: opt('string'),
    runbook_hash: opt('string'),
    inputs: opt('object'),
    plan: opt('object'),
  },
  'host-start': { time: req('string'), host: req('string'), batch: opt('int') },
  'step-start': { time: req('string'), host: req('string'), step: req('string'), phase: req('string', PHASES), index: req('int') },
  'step-end': {
    time: req('string'),
    host: req('string'),
    step: req('string'),
    phase: req('string', PHASES),
    index: req('int'),
    status: req('string', STEP_STATUSES),
    stage: opt('string', STAGES),
    code: opt('int|null'),
    register: opt('object'),
    message: opt('string'),
  },
  'rollback-start': { time: req('string'), host: req('string'), step: req('string'), index: req('int') },
  'rollback-end': {
    time: req('string'),
    host: req('string'),
    step: req('string'),
    index: req('int'),
    status: req('string', ['ok', 'failed']),
    code: opt('int|null'),
    message: opt('string'),
  },
  'host-end': {
    time: req('string'),
    host: req('string'),
    status: req('string', HOST_STATUSES),
    message: opt('string'),
    code: opt('string'),
  },
  'alternative-start': ALTERNATIVE,
  'alternative-end': {
    ...ALTERNATIVE,
    status: req('string', ['held', 'undone', 'undo-failed', 'not-applicable']),
    message: opt('string'),
  },
  batches: { time: req('string'), batches: req('array') },
  warning: { time: req('string'), host: opt('string'), message: req('string') },
  'run-end': { time: req('string'), run_id: opt('string'), status: req('string'), exit_code: opt('int'), hosts: opt('object') },
};

function kindOk(kind: Kind, v: unknown): boolean {
  switch (kind) {
    case 'string':
      return typeof v === 'string';
    case 'int':
      return Number.isInteger(v);
    case 'int|null':
      return v === null || Number.isInteger(v);
    case 'object':
      return typeof v === 'object' && v !== null && !Array.isArray(v);
    case 'array':
      return Array.isArray(v);
    case 'strings':
      return Array.isArray(v) && v.every((x) => typeof x === 'string');
  }
}

/**
 * Checks one parsed line against the schema. Returns the record, or the problem in words
 * ("step-end: field index is missing").
 */
export function decodeRecord(v: unknown): { record: JournalRecord } | { problem: string } {
  if (!v || typeof v !== 'object' || Array.isArray(v)) return { problem: 'is not a journal record (a JSON object)' };
  const o = v as Record<string, unknown>;
  if (typeof o.type !== 'string') return { problem: 'is not a journal record (it has no "type")' };
  const fields = SCHEMA[o.type as JournalRecord['type']];
  if (!fields) return { problem: `has an unknown record type "${o.type}"` };
  for (const [name, f] of Object.entries(fields)) {
    const x = o[name];
    if (x === undefined) {
      if (f.required) return { problem: `(${o.type}) lacks its field "${name}"` };
      continue;
    }
    if (!kindOk(f.kind, x) || (f.oneOf && !f.oneOf.includes(x as string))) {
      return { problem: `(${o.type}) has a bad "${name}": ${JSON.stringify(x).slice(0, 80)}` };
    }
  }
  if (o.type === 'run-start') {
    const bad = runStartShape(o);
    if (bad) return { problem: `(run-start) has a bad ${bad}` };
  }
  if (o.type === 'journal-open' && typeof o.v === 'number' && o.v > JOURNAL_VERSION) {
    throw new RunbookError(
      'E_JOURNAL_VERSION',
      `the journal was written by a newer runbook (journal version ${o.v}, this one reads up to ${JOURNAL_VERSION}); use that version to read it`,
    );
  }
  return { record: o as unknown as JournalRecord };
}

const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);
const isStrings = (v: unknown): boolean => Array.isArray(v) && v.every((x) => typeof x === 'string');

/** The nested parts of run-start that resume and rollback rebuild the plan from; the name of the first bad one. */
function runStartShape(o: Record<string, unknown>): string | undefined {
  const i = o.inputs;
  if (i !== undefined) {
    if (!isObj(i)) return '"inputs"';
    if (!isStrings(i.inventory)) return '"inputs.inventory"';
    if (!isStrings(i.extra_vars)) return '"inputs.extra_vars"';
    if (typeof i.cwd !== 'string') return '"inputs.cwd"';
    if (!isObj(i.options)) return '"inputs.options"';
    if (i.limit !== undefined && i.limit !== null && typeof i.limit !== 'string') return '"inputs.limit"';
  }
  const p = o.plan;
  if (p !== undefined) {
    if (!isObj(p)) return '"plan"';
    if (!Array.isArray(p.hosts) || !p.hosts.every((h) => isObj(h) && typeof h.name === 'string' && isObj(h.connection)))
      return '"plan.hosts"';
    if (!Array.isArray(p.batches) || !p.batches.every(isStrings)) return '"plan.batches"';
    if (!Number.isInteger(p.max_failed)) return '"plan.max_failed"';
  }
  if (o.batches !== undefined && !(Array.isArray(o.batches) && o.batches.every(isStrings))) return '"batches"';
  return undefined;
}
