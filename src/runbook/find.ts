/** Where runbooks are: a path, ./runbooks/NAME.yml, or the runbooks shipped in the package. */
import { readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { constructFromEvents, parseEvents } from 'js-yaml';
import { RunbookError } from '../core/errors.js';

/** The package root: two directories up from this file (dist/runbook/load.js or src/runbook/load.ts). */
export function packageRoot(): string {
  return resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
}

export function shippedRunbooksDir(): string {
  return join(packageRoot(), 'runbooks');
}

function looksLikePath(s: string): boolean {
  return s.includes('/') || s.includes('\\') || /\.ya?ml$/i.test(s);
}

/**
 * A path (contains `/` or ends .yml/.yaml) is taken as is (relative to cwd); a name is looked up
 * as ./runbooks/NAME.yml, ./runbooks/NAME.yaml, then the package's runbooks/NAME.yml(.yaml).
 * Throws RunbookError E_RUNBOOK_NOT_FOUND listing where it looked.
 */
export function resolveRunbookPath(nameOrPath: string, cwd: string): string {
  const tried: string[] = [];
  if (looksLikePath(nameOrPath)) {
    const p = resolve(cwd, nameOrPath);
    if (isFile(p)) return p;
    tried.push(p);
  } else {
    const dirs = [join(resolve(cwd), 'runbooks'), shippedRunbooksDir()];
    for (const dir of dirs) {
      for (const ext of ['.yml', '.yaml']) {
        const p = join(dir, nameOrPath + ext);
        if (tried.includes(p)) continue;
        if (isFile(p)) return p;
        tried.push(p);
      }
    }
  }
  throw new RunbookError(
    'E_RUNBOOK_NOT_FOUND',
    `runbook "${nameOrPath}" not found; looked at: ${tried.join(', ')}. Run \`runbook list\` to see the available runbooks, or give a path to a .yml file.`,
  );
}

function isFile(p: string): boolean {
  try {
    return statSync(p).isFile();
  } catch {
    return false;
  }
}

/** `file` relative to cwd when it lies below it, else as given. */
export function displayPath(file: string, cwd: string): string {
  const rel = relative(resolve(cwd), file);
  return rel && !rel.startsWith('..') && !isAbsolute(rel) ? rel : file;
}

export interface RunbookListEntry {
  name: string;
  file: string;
  description?: string;
  destructive: boolean;
  shipped: boolean;
}

/** ./runbooks first, then the shipped ones; a local runbook shadows a shipped one of the same name. */
export function listRunbooks(cwd: string = process.cwd()): RunbookListEntry[] {
  const shippedDir = shippedRunbooksDir();
  const localDir = join(resolve(cwd), 'runbooks');
  const same = realOrSelf(localDir) === realOrSelf(shippedDir);
  const out: RunbookListEntry[] = [];
  const seen = new Set<string>();
  const dirs: Array<[string, boolean]> = same
    ? [[shippedDir, true]]
    : [
        [localDir, false],
        [shippedDir, true],
      ];
  for (const [dir, shipped] of dirs) {
    let names: string[];
    try {
      names = readdirSync(dir).sort();
    } catch {
      continue;
    }
    for (const f of names) {
      if (!/\.ya?ml$/i.test(f)) continue;
      const file = join(dir, f);
      if (!isFile(file)) continue;
      const name = f.replace(/\.ya?ml$/i, '');
      if (seen.has(name)) continue;
      seen.add(name);
      const entry: RunbookListEntry = { name, file, destructive: false, shipped };
      try {
        const text = readFileSync(file, 'utf8');
        const [doc] = constructFromEvents(parseEvents(text, { filename: file }), { source: text, filename: file });
        if (doc && typeof doc === 'object' && !Array.isArray(doc)) {
          const d = doc as Record<string, unknown>;
          if (typeof d.description === 'string') entry.description = d.description;
          entry.destructive = d.destructive === true;
        }
      } catch {
        /* listed anyway; `validate` explains what is wrong */
      }
      out.push(entry);
    }
  }
  return out;
}

function realOrSelf(p: string): string {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
}
