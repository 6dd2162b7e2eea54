/**
 * Ansible's YAML inventory format (plugins/inventory/yaml.py of ansible-core 2.14): top-level keys are
 * groups, each with `hosts`, `children`, `vars`. YAML is read with YAML 1.1 rules like PyYAML
 * (yes/no are booleans, 0755 is octal), `!unsafe` is a plain string and `!vault` is detected.
 */
import * as yaml from 'js-yaml';
import { CodedError } from '../core/errors.js';
import { type RInventory, GroupError } from './data.js';
import { expandHostPattern, RangeError_ } from './hostpattern.js';
import { InventoryParseError } from './ini.js';

/** Marker for a `!vault` value; loadInventory refuses inventories that contain one. */
export class VaultValue {
  constructor(readonly text: string) {}
}

const vaultTag = yaml.defineScalarTag<VaultValue>('!vault', {
  resolve: (s) => new VaultValue(s),
  identify: (d) => d instanceof VaultValue,
});
const vaultEncTag = yaml.defineScalarTag<VaultValue>('!vault-encrypted', { resolve: (s) => new VaultValue(s), identify: () => false });
const unsafeTag = yaml.defineScalarTag<string>('!unsafe', { resolve: (s) => s, identify: () => false });
const unsafeSeqTag = yaml.defineSequenceTag<unknown[]>('!unsafe', {
  create: () => [],
  addItem: (c, i) => {
    c.push(i);
  },
  identify: () => false,
});
const unsafeMapTag = yaml.defineMappingTag<Record<string, unknown>>('!unsafe', {
  create: () => ({}),
  addPair: (c, k, v) => {
    c[String(k)] = v;
    return '';
  },
  has: (c, k) => Object.hasOwn(c, String(k)),
  keys: (r) => Object.keys(r),
  get: (r, k) => r[String(k)],
  identify: () => false,
});

// PyYAML's YAML 1.1 booleans: yes/no/true/false/on/off in three casings, but not y/n.
const PY_TRUE = ['yes', 'Yes', 'YES', 'true', 'True', 'TRUE', 'on', 'On', 'ON'];
const PY_FALSE = ['no', 'No', 'NO', 'false', 'False', 'FALSE', 'off', 'Off', 'OFF'];
const pyBoolTag = yaml.defineScalarTag<boolean>('tag:yaml.org,2002:bool', {
  implicit: true,
  implicitFirstChars: ['y', 'Y', 'n', 'N', 't', 'T', 'f', 'F', 'o', 'O'],
  resolve: (s) => (PY_TRUE.includes(s) ? true : PY_FALSE.includes(s) ? false : yaml.NOT_RESOLVED),
  identify: (d) => typeof d === 'boolean',
});

export const ANSIBLE_YAML_SCHEMA = yaml.YAML11_SCHEMA.withTags(
  pyBoolTag,
  yaml.mergeTag,
  vaultTag,
  vaultEncTag,
  unsafeTag,
  unsafeSeqTag,
  unsafeMapTag,
);

/** A YAML file that does not parse (its callers add the file and line to a ValidationError). */
export class YamlSyntaxError extends CodedError {
  constructor(
    readonly file: string,
    readonly line: number | undefined,
    message: string,
  ) {
    super('E_YAML_SYNTAX', message);
    this.name = 'YamlSyntaxError';
  }
}

/** Load one YAML document like Ansible's loader (None for an empty document). Dates become ISO strings. */
export function loadYaml(text: string, file: string): unknown {
  let docs: unknown[];
  try {
    docs = yaml.loadAll(text, { schema: ANSIBLE_YAML_SCHEMA, filename: file });
  } catch (e) {
    const ex = e as yaml.YAMLException;
    const line = ex.mark && typeof ex.mark.line === 'number' ? ex.mark.line + 1 : undefined;
    throw new YamlSyntaxError(file, line, ex.reason || ex.message);
  }
  if (docs.length > 1) throw new YamlSyntaxError(file, undefined, 'more than one YAML document (---) in one file; Ansible reads one');
  return normalizeDates(docs.length ? docs[0] : null);
}

function normalizeDates(v: unknown): unknown {
  if (v instanceof Date) {
    const iso = v.toISOString();
    return iso.endsWith('T00:00:00.000Z') ? iso.slice(0, 10) : iso.replace(/\.000Z$/, '').replace(/Z$/, '');
  }
  if (Array.isArray(v)) return v.map(normalizeDates);
  if (v && typeof v === 'object' && !(v instanceof VaultValue)) {
    for (const k of Object.keys(v)) (v as Record<string, unknown>)[k] = normalizeDates((v as Record<string, unknown>)[k]);
  }
  return v;
}

/** A plain mapping (not a list, not a vault value). */
export function isMapping(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !(v instanceof VaultValue);
}

function typeName(v: unknown): string {
  if (Array.isArray(v)) return 'a list';
  if (v instanceof VaultValue) return 'a vault value';
  return `a ${typeof v}`;
}

/** Best-effort line of `key:` in the text (first occurrence at or after `from`). */
export function lineOfKey(text: string, key: string, from = 0): number | undefined {
  const lines = text.split(/\r\n|\r|\n/);
  const esc = key.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const re = new RegExp(`^\\s*(?:-\\s+)?(["']?)${esc}\\1\\s*:`);
  for (let i = from; i < lines.length; i++) if (re.test(lines[i])) return i + 1;
  for (let i = 0; i < Math.min(from, lines.length); i++) if (re.test(lines[i])) return i + 1;
  return undefined;
}

/**
 * Is this parsed document a YAML inventory? Mirrors the cases where Ansible's yaml plugin raises
 * (and Ansible falls back to the INI parser).
 */
export function yamlRejectReason(data: unknown): string | undefined {
  if (data === null || data === undefined || data === '' || (isMapping(data) && Object.keys(data).length === 0)) return 'empty YAML file';
  if (!isMapping(data)) return `a YAML inventory is a mapping of groups, got ${typeName(data)}`;
  if (data.plugin) return 'plugin';
  return undefined;
}

export function parseYamlInventory(
  inv: RInventory,
  file: string,
  text: string,
  data: Record<string, unknown>,
  warn: (m: string) => void,
): void {
  const fail = (line: number | undefined, msg: string): never => {
    throw new InventoryParseError(file, line, msg);
  };
  const guard = <T>(key: string, f: () => T): T => {
    try {
      return f();
    } catch (e) {
      if (e instanceof GroupError || e instanceof RangeError_) return fail(lineOfKey(text, key), e.message);
      throw e;
    }
  };

  const parseGroup = (group: string, gdata: unknown): string => {
    if (!(isMapping(gdata) || gdata === null)) {
      warn(`${file}: skipping '${group}': not a valid group definition (${typeName(gdata)})`);
      return group;
    }
    inv.addGroup(group);
    if (gdata === null) return group;
    for (const section of ['vars', 'children', 'hosts']) {
      if (section in gdata) {
        if (typeof gdata[section] === 'string') gdata[section] = { [gdata[section] as string]: null };
        const v = gdata[section];
        if (!(isMapping(v) || v === null)) {
          fail(lineOfKey(text, group), `group '${group}': '${section}' must be a mapping, found ${typeName(v)}`);
        }
      }
    }
    for (const key of Object.keys(gdata)) {
      const val = gdata[key];
      if (!(isMapping(val) || val === null)) {
        warn(`${file}: skipping key '${key}' in group '${group}': it is not a mapping`);
        continue;
      }
      if (val === null) continue;
      if (key === 'vars') {
        for (const [k, v] of Object.entries(val)) guard(group, () => inv.setVariable(group, k, v));
      } else if (key === 'children') {
        for (const sub of Object.keys(val)) {
          const name = parseGroup(sub, val[sub]);
          guard(sub, () => inv.addChild(group, name));
        }
      } else if (key === 'hosts') {
        for (const hp of Object.keys(val)) {
          const { names, port } = guard(hp, () => expandHostPattern(hp));
          const hv = val[hp] ?? {};
          if (!isMapping(hv))
            fail(lineOfKey(text, hp), `host '${hp}' in group '${group}': its variables must be a mapping, found ${typeName(hv)}`);
          guard(hp, () => {
            for (const h of names) {
              inv.addHost(h, group, port);
              for (const [k, v] of Object.entries(hv as Record<string, unknown>)) inv.setVariable(h, k, v);
            }
          });
        }
      } else {
        warn(`${file}: skipping unexpected key '${key}' in group '${group}': only vars, children and hosts are valid`);
      }
    }
    return group;
  };

  for (const g of Object.keys(data)) parseGroup(g, data[g]);
}
