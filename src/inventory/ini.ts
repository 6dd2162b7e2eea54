/**
 * Ansible's INI inventory format (plugins/inventory/ini.py of ansible-core 2.14), ported line by line:
 * `[group]`, `[group:vars]`, `[group:children]`, host lines with inline key=value (shlex + literal_eval),
 * implicit `ungrouped` for lines before the first section, groups declared later than referenced.
 */
import { CodedError } from '../core/errors.js';
import { type RInventory, GroupError } from './data.js';
import { literalEval, shlexSplit } from './pysyntax.js';
import { expandHostPattern, RangeError_ } from './hostpattern.js';

/** A syntax error in one inventory file (load.ts turns it into a ValidationError with file and line). */
export class InventoryParseError extends CodedError {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    message: string,
    code = 'E_INVENTORY_SYNTAX',
  ) {
    super(code, message);
    this.name = 'InventoryParseError';
  }
}

const SECTION = /^\[([^:\]\s]+)(?::(\w+))?\]\s*(?:#.*)?$/;
const GROUPNAME = /^([^:\]\s]+)\s*(?:#.*)?$/;

/** INI value parsing: ast.literal_eval, else the string itself. */
export function parseIniValue(v: string): unknown {
  const r = literalEval(v);
  return r ? r.value : v;
}

type Pending = { line: number; state: 'vars' | 'children'; name: string; parents: string[] };

export function parseIni(inv: RInventory, file: string, text: string): void {
  const lines = text.split(/\r\n|\r|\n/);
  const pending = new Map<string, Pending>();
  let groupname = 'ungrouped';
  let state = 'hosts';
  let lineno = 0;
  const fail = (msg: string): never => {
    throw new InventoryParseError(file, lineno, msg);
  };
  const guard = <T>(f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof GroupError || e instanceof RangeError_) return fail(e.message);
      throw e;
    }
  };

  const addPendingChildren = (group: string) => {
    const p = pending.get(group)!;
    for (const parent of p.parents) {
      guard(() => inv.addChild(parent, group));
      const pp = pending.get(parent);
      if (pp && pp.state === 'children') addPendingChildren(parent);
    }
    pending.delete(group);
  };

  for (const raw of lines) {
    lineno++;
    const line = raw.trim();
    if (!line || line[0] === ';' || line[0] === '#') continue;
    const m = SECTION.exec(line);
    if (m) {
      groupname = m[1];
      state = m[2] || 'hosts';
      if (!['hosts', 'children', 'vars'].includes(state)) {
        fail(`section [${m[1]}:${m[2]}] has unknown type '${m[2]}': use [${m[1]}], [${m[1]}:vars] or [${m[1]}:children]`);
      }
      if (!inv.groups.has(groupname)) {
        if (state === 'vars' && !pending.has(groupname))
          pending.set(groupname, { line: lineno, state: 'vars', name: groupname, parents: [] });
        inv.addGroup(groupname);
      }
      const p = pending.get(groupname);
      if (p && state !== 'vars') {
        if (p.state === 'children') addPendingChildren(groupname);
        else if (p.state === 'vars') pending.delete(groupname);
      }
      continue;
    } else if (line.startsWith('[') && line.endsWith(']')) {
      fail(`invalid section entry '${line}': a section is [name], [name:vars] or [name:children], without spaces`);
    }

    if (state === 'hosts') {
      let tokens: string[];
      try {
        tokens = shlexSplit(line);
      } catch (e) {
        throw new InventoryParseError(file, lineno, `cannot parse host line '${line}': ${(e as Error).message}`);
      }
      if (tokens.length === 0) continue;
      const hostpattern = tokens[0];
      const { names, port } = guard(() => expandHostPattern(hostpattern));
      if (hostpattern.trim().endsWith(':') && port === undefined) {
        fail(`invalid host pattern '${hostpattern}': a trailing ':' is reserved for a port number`);
      }
      for (const n of names)
        if (n.trim() === '---') fail(`invalid host pattern '${hostpattern}': '---' looks like a YAML file; name it .yml`);
      const vars: Record<string, unknown> = {};
      for (const t of tokens.slice(1)) {
        const eq = t.indexOf('=');
        if (eq < 0) fail(`expected key=value host variable assignment, got: ${t}`);
        vars[t.slice(0, eq)] = parseIniValue(t.slice(eq + 1));
      }
      guard(() => {
        for (const h of names) {
          inv.addHost(h, groupname, port);
          for (const [k, v] of Object.entries(vars)) inv.setVariable(h, k, v);
        }
      });
    } else if (state === 'vars') {
      const eq = line.indexOf('=');
      if (eq < 0) fail(`expected key=value, got: ${line}`);
      const k = line.slice(0, eq).trim();
      const v = parseIniValue(line.slice(eq + 1).trim());
      guard(() => inv.setVariable(groupname, k, v));
    } else {
      const gm = GROUPNAME.exec(line);
      if (!gm) fail(`expected a group name, got: ${line}`);
      const child = gm![1];
      if (!inv.groups.has(child)) {
        const p = pending.get(child);
        if (!p) pending.set(child, { line: lineno, state: 'children', name: child, parents: [groupname] });
        else p.parents.push(groupname);
      } else {
        guard(() => inv.addChild(groupname, child));
      }
    }
  }
  for (const p of pending.values()) {
    if (p.state === 'vars') {
      throw new InventoryParseError(
        file,
        p.line,
        `section [${p.name}:vars] is for a group that is never declared: add a [${p.name}] section or remove it`,
      );
    }
    throw new InventoryParseError(
      file,
      p.line,
      `section [${p.parents[p.parents.length - 1]}:children] names an undefined group '${p.name}': declare [${p.name}] (it may be empty)`,
    );
  }
}
