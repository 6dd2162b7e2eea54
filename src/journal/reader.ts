/**
 * Reading run journals: the file, decoded into typed records (records.ts) once, and replayed
 * into a run history (history.ts); the list of runs.
 */
import { promises as fsp } from 'node:fs';
import { processAlive } from '../core/pid.js';
import { join } from 'node:path';
import { RunbookError } from '../core/errors.js';
import { replay, summarize, type RunHistory, type RunSummary } from './history.js';
import { decodeRecord, type JournalOpenRecord, type JournalRecord } from './records.js';
import { journalPath } from './writer.js';

export type { JournalRecord } from './records.js';
export type { RunSummary } from './history.js';

export interface JournalContents {
  path: string;
  records: JournalRecord[];
  /** The last line was incomplete or not JSON (crash mid-write) and was ignored. */
  torn: boolean;
}

/** Parses and decodes journal text. Exported for tests; readJournal() reads the file. */
export function parseJournal(text: string, path: string): JournalContents {
  const records: JournalRecord[] = [];
  let torn = false;
  if (text.length === 0) return { path, records, torn };
  const endsWithNl = text.endsWith('\n');
  const lines = text.split('\n');
  if (endsWithNl) lines.pop(); // the empty string after the final newline
  for (let i = 0; i < lines.length; i++) {
    const isLast = i === lines.length - 1;
    let value: unknown;
    let problem: string | undefined;
    try {
      value = JSON.parse(lines[i]);
    } catch (err) {
      problem = `is not valid JSON (${(err as Error).message})`;
    }
    // A torn last line (the controller died while appending: no newline, or not JSON) is
    // ignored; everything before it is intact. Its sync() never returned, so no action
    // depended on it.
    if (isLast && (problem || !endsWithNl)) {
      torn = true;
      continue;
    }
    if (!problem) {
      const d = decodeRecord(value);
      if ('record' in d) records.push(d.record);
      else problem = d.problem;
    }
    if (problem) {
      throw new RunbookError(
        'E_JOURNAL_CORRUPT',
        `run journal ${path} line ${i + 1} ${problem}; the file was damaged or edited. Only a torn last line is tolerated; move the file away to forget the run`,
      );
    }
  }
  return { path, records, torn };
}

/** Reads a journal file. Missing file: E_RUN_NOT_FOUND. */
export async function readJournal(path: string): Promise<JournalContents> {
  let text: string;
  try {
    text = await fsp.readFile(path, 'utf8');
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (e.code === 'ENOENT')
      throw new RunbookError(
        'E_RUN_NOT_FOUND',
        `no run journal at ${path}; see \`runbook runs\` for the runs in this state directory (--state-dir)`,
      );
    throw new RunbookError('E_JOURNAL_READ', `cannot read the run journal ${path}: ${e.message}`, { cause: err });
  }
  return parseJournal(text, path);
}

/** Whether the process that opened a journal still runs (on this machine; elsewhere we cannot tell, so no). */
export function openerAlive(o: JournalOpenRecord): boolean {
  return typeof o.pid === 'number' && processAlive(o.controller ?? '', o.pid) === true;
}

/** Reads and replays one run's journal. */
export async function readHistory(stateDir: string, runId: string): Promise<RunHistory> {
  const path = journalPath(stateDir, runId);
  const { records, torn } = await readJournal(path);
  return replay(records, { runId, path, torn });
}

/** Every run in the state dir, newest first. A damaged journal is listed with status corrupt. */
export async function listRuns(stateDir: string): Promise<RunSummary[]> {
  const dir = join(stateDir, 'runs');
  let names: string[];
  try {
    names = await fsp.readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new RunbookError('E_JOURNAL_READ', `cannot list runs in ${dir}: ${(err as Error).message}`, { cause: err });
  }
  const out: RunSummary[] = [];
  for (const name of names) {
    if (!name.endsWith('.ndjson')) continue;
    const runId = name.slice(0, -'.ndjson'.length);
    const path = join(dir, name);
    try {
      const j = await readJournal(path);
      out.push(summarize(replay(j.records, { runId, path, torn: j.torn }), openerAlive));
    } catch (err) {
      out.push({ run_id: runId, status: 'corrupt', hosts: {}, journal: path, error: (err as Error).message });
    }
  }
  out.sort((a, b) => (a.run_id < b.run_id ? 1 : a.run_id > b.run_id ? -1 : 0));
  return out;
}
