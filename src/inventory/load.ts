/**
 * loadInventory(): Ansible-compatible inventory loading (ansible-core 2.14 semantics).
 * Sources: YAML/JSON, INI, directories (every file, Ansible's ignore rules), comma host lists ("a,b,").
 * Variables: group_vars/ and host_vars/ beside each source (and in extraVarDirs, like a playbook dir),
 * merged in Ansible's precedence order.
 */
import { decodeUtf8 } from '../core/text.js';
import { accessSync, constants, existsSync, readdirSync, readFileSync, realpathSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { homedir } from 'node:os';
import { RunbookError, ValidationError } from '../core/errors.js';
import type { Inventory, InventoryGroup, InventoryHost } from './types.js';
import { LOCALHOST_NAMES, RGroup, RHost, RInventory, sortGroups } from './data.js';
import { InventoryParseError, parseIni } from './ini.js';
import { loadYaml, parseYamlInventory, VaultValue, YamlSyntaxError, yamlRejectReason, lineOfKey } from './yaml.js';
import { parseAddress } from './hostpattern.js';

export interface LoadInventoryOptions {
  cwd?: string;
  /** Directories whose group_vars/ and host_vars/ apply like a playbook directory's (e.g. the runbook's dir). */
  extraVarDirs?: string[];
}

// manager.py IGNORED: hidden files, host_vars/group_vars/vars_plugins, INVENTORY_IGNORE_EXTS.
const IGNORED_EXTS = ['.pyc', '.pyo', '.swp', '.bak', '~', '.rpm', '.md', '.txt', '.rst', '.orig', '.ini', '.cfg', '.retry'];
const YAML_EXTS = ['.yml', '.yaml', '.json'];

function ignoredInDir(name: string): boolean {
  if (/^\./.test(name) || /^host_vars$/.test(name) || /^group_vars$/.test(name) || /^vars_plugins$/.test(name)) return true;
  return IGNORED_EXTS.some((e) => name.endsWith(e));
}

/** Python os.path.splitext extension (leading dots of the base name are not an extension). */
function pyExt(name: string): string {
  const b = basename(name);
  const stripped = b.replace(/^\.+/, '');
  const i = stripped.lastIndexOf('.');
  return i <= 0 ? (i === 0 ? stripped.slice(0) : '') : stripped.slice(i);
}

function expandUser(p: string): string {
  return p === '~' ? homedir() : p.startsWith('~/') ? join(homedir(), p.slice(2)) : p;
}

/** Refuses Ansible Vault values anywhere in parsed inventory / vars data (naming the key and its line). */
function findVault(file: string, text: string, data: unknown, path: string[] = []): void {
  if (data instanceof VaultValue || (typeof data === 'string' && data.startsWith('$ANSIBLE_VAULT;'))) {
    const key = path[path.length - 1] ?? '';
    const line = lineOfKey(text, key);
    throw new RunbookError(
      'E_INVENTORY_VAULT',
      `${file}${line ? `:${line}` : ''}: '${path.join('.')}' is vault-encrypted; runbook does not decrypt Ansible Vault. Decrypt it or pass the secret another way (environment, -e @file outside the journal).`,
    );
  }
  if (Array.isArray(data)) for (const [i, v] of data.entries()) findVault(file, text, v, [...path, String(i)]);
  else if (data && typeof data === 'object') for (const [k, v] of Object.entries(data)) findVault(file, text, v, [...path, k]);
}

class Loader {
  inv = new RInventory();
  warnings: string[] = [];

  warn = (m: string) => {
    this.warnings.push(m);
  };

  parseSource(source: string): void {
    const st = statSync(source);
    if (st.isDirectory()) {
      for (const name of readdirSync(source).sort()) {
        if (ignoredInDir(name)) continue;
        this.parseSource(join(source, name));
      }
      return;
    }
    this.parseFile(source, st.mode);
  }

  parseFile(file: string, mode: number): void {
    const buf = readFileSync(file);
    const shebang = buf.subarray(0, 2).toString('latin1') === '#!';
    let executable = false;
    try {
      accessSync(file, constants.X_OK);
      executable = (mode & 0o111) !== 0;
    } catch {
      executable = false;
    }
    const text = buf.toString('utf8');
    const notText = text.includes('\uFFFD') || buf.includes(0);
    if (shebang || (executable && notText)) {
      throw new RunbookError(
        'E_INVENTORY_SCRIPT',
        `${file}: inventory scripts are not supported (the file is ${shebang ? 'a script (#!)' : 'an executable'}); export its output to a YAML inventory, e.g. \`${file} --list > inventory.json\`, and pass that file with -i.`,
      );
    }
    decodeUtf8(buf, file, 'inventory file');
    if (text.trimStart().startsWith('$ANSIBLE_VAULT')) {
      throw new RunbookError(
        'E_INVENTORY_VAULT',
        `${file}: the inventory file is Ansible Vault-encrypted; runbook does not decrypt vault. Decrypt it (ansible-vault decrypt) or keep secrets out of the inventory.`,
      );
    }
    const ext = pyExt(file);
    if (ext === '.toml') throw new InventoryParseError(file, undefined, 'TOML inventories are not supported: convert it to YAML or INI');
    let yamlError: InventoryParseError | undefined;
    if (ext === '' || YAML_EXTS.includes(ext)) {
      // Ansible's order: the yaml plugin first; if it refuses, the ini plugin.
      let data: unknown;
      let parsed = false;
      try {
        data = loadYaml(text, file);
        parsed = true;
      } catch (e) {
        if (!(e instanceof YamlSyntaxError)) throw e;
        yamlError = new InventoryParseError(file, e.line, `YAML: ${e.message}`);
      }
      if (parsed) {
        const why = yamlRejectReason(data);
        if (why === undefined) {
          findVault(file, text, data);
          // Work on a snapshot so a failed YAML parse leaves nothing half-added (then INI is tried).
          const snapshot = this.snapshot();
          try {
            parseYamlInventory(this.inv, file, text, data as Record<string, unknown>, this.warn);
            return;
          } catch (e) {
            if (!(e instanceof InventoryParseError)) throw e;
            this.restore(snapshot);
            yamlError = e;
          }
        } else if (why === 'plugin') {
          throw new RunbookError(
            'E_INVENTORY_PLUGIN',
            `${file}: inventory plugins ('plugin: ${String((data as Record<string, unknown>).plugin)}') are not supported; write the hosts as a YAML or INI inventory.`,
          );
        } else if (why !== 'empty YAML file') {
          yamlError = new InventoryParseError(file, 1, why);
        }
      }
    }
    const snapshot = this.snapshot();
    try {
      parseIni(this.inv, file, text);
      if (text.includes('$ANSIBLE_VAULT')) {
        const i = text.split(/\r\n|\r|\n/).findIndex((l) => l.includes('$ANSIBLE_VAULT'));
        throw new RunbookError(
          'E_INVENTORY_VAULT',
          `${file}:${i + 1}: a vault-encrypted value; runbook does not decrypt Ansible Vault. Decrypt it or move the secret out of the inventory.`,
        );
      }
    } catch (e) {
      if (!(e instanceof InventoryParseError)) throw e;
      this.restore(snapshot);
      // Which error to show: the YAML one for YAML-looking files, else the INI one.
      const looksYaml =
        YAML_EXTS.includes(ext) ||
        /^\s*(---|[\w.-]+\s*:(\s|$))/m.test(text.split('\n').find((l) => l.trim() && !l.trim().startsWith('#')) ?? '');
      throw looksYaml && yamlError ? yamlError : e;
    }
  }

  // A cheap snapshot: parsing is rare and inventories are small; JSON-free structural copy.
  snapshot(): RInventory {
    const copy = new RInventory();
    const gmap = new Map<RGroup, RGroup>();
    const hmap = new Map<RHost, RHost>();
    copy.groups = new Map();
    for (const [n, g] of this.inv.groups) {
      const ng = new RGroup(n);
      ng.depth = g.depth;
      ng.priority = g.priority;
      ng.vars = { ...g.vars };
      gmap.set(g, ng);
      copy.groups.set(n, ng);
    }
    for (const [n, h] of this.inv.hosts) {
      const nh = new RHost(n);
      nh.vars = { ...h.vars };
      nh.implicit = h.implicit;
      hmap.set(h, nh);
      copy.hosts.set(n, nh);
    }
    for (const [g, ng] of gmap) {
      ng.hosts = g.hosts.map((h) => hmap.get(h)!);
      ng.hostNames = new Set(g.hostNames);
      ng.childGroups = g.childGroups.map((x) => gmap.get(x)!);
      ng.parentGroups = g.parentGroups.map((x) => gmap.get(x)!);
    }
    for (const [h, nh] of hmap) nh.groups = h.groups.map((g) => gmap.get(g)!);
    return copy;
  }

  restore(s: RInventory): void {
    this.inv = s;
  }

  /** host_list plugin: "host1,host2:2222," */
  parseHostList(list: string): void {
    for (const raw of list.split(',')) {
      const h = raw.trim();
      if (!h) continue;
      let host = h;
      let port: number | undefined;
      const pa = parseAddress(h);
      if (pa && !pa.host.includes('[')) {
        host = pa.host;
        port = pa.port;
      }
      if (!this.inv.hosts.has(host)) this.inv.addHost(host, 'ungrouped', port);
    }
  }
}

/** Files of group_vars/NAME or host_vars/NAME in Ansible's order (DataLoader.find_vars_files). */
export function findVarsFiles(dir: string, name: string): string[] {
  const base = join(dir, name);
  for (const ext of ['', ...YAML_EXTS]) {
    const full = base + ext;
    if (!existsSync(full)) continue;
    if (statSync(full).isDirectory()) return dirVarsFiles(full);
    return [full];
  }
  return [];
}

function dirVarsFiles(path: string): string[] {
  const found: string[] = [];
  for (const name of readdirSync(path).sort()) {
    if (name.startsWith('.') || name.endsWith('~')) continue;
    const ext = pyExt(name);
    const full = join(path, name);
    const st = statSync(full);
    if (st.isDirectory() && !ext) found.push(...dirVarsFiles(full));
    else if (st.isFile() && (!ext || YAML_EXTS.includes(ext))) found.push(full);
  }
  return found;
}

class VarsFiles {
  private cache = new Map<string, Record<string, unknown>>();
  /** realpath of each BASEDIR/group_vars|host_vars (null: none), once per load: 6 lookups per host. */
  private real = new Map<string, string | null>();

  /** The host_group_vars plugin for one base dir and one entity. */
  get(basedir: string, sub: 'group_vars' | 'host_vars', name: string): Record<string, unknown> {
    if (name.startsWith('/')) return {};
    const dir = join(basedir, sub);
    let opath = this.real.get(dir);
    if (opath === undefined) {
      try {
        opath = realpathSync(dir);
      } catch {
        opath = null;
      }
      this.real.set(dir, opath);
    }
    if (opath === null) return {};
    const key = `${opath}\0${name}`;
    const hit = this.cache.get(key);
    if (hit) return hit;
    let data: Record<string, unknown> = {};
    if (existsSync(opath) && statSync(opath).isDirectory()) {
      for (const f of findVarsFiles(opath, name)) {
        const nd = this.loadFile(f);
        if (nd) data = { ...data, ...nd };
      }
    }
    this.cache.set(key, data);
    return data;
  }

  private loadFile(f: string): Record<string, unknown> | undefined {
    const text = decodeUtf8(readFileSync(f), f, 'variables file');
    if (text.trimStart().startsWith('$ANSIBLE_VAULT')) {
      throw new RunbookError(
        'E_INVENTORY_VAULT',
        `${f}: the variables file is Ansible Vault-encrypted; runbook does not decrypt vault. Decrypt it or keep the secret elsewhere.`,
      );
    }
    let data: unknown;
    try {
      data = loadYaml(text, f);
    } catch (e) {
      if (e instanceof YamlSyntaxError) throw new ValidationError([{ file: f, line: e.line, message: e.message }], 'E_INVENTORY_SYNTAX');
      throw e;
    }
    findVault(f, text, data);
    if (!data) return undefined; // empty files are ignored, like Ansible
    if (typeof data !== 'object' || Array.isArray(data)) {
      throw new ValidationError(
        [
          {
            file: f,
            line: 1,
            message: `a variables file must be a mapping of names to values, found ${Array.isArray(data) ? 'a list' : typeof data}`,
          },
        ],
        'E_INVENTORY_SYNTAX',
      );
    }
    if (Object.keys(data).length === 0) return undefined;
    return data as Record<string, unknown>;
  }
}

/** Ansible's "inventory sources" for vars plugins: the dir of a file source, a dir source itself. */
function varsBaseDirs(sources: string[]): string[] {
  const out: string[] = [];
  for (const s of sources) {
    if (s.includes(',') && !existsSync(s)) continue;
    out.push(existsSync(s) && statSync(s).isDirectory() ? s : dirname(s));
  }
  return out;
}

/**
 * Load and merge inventory sources like `ansible-inventory -i A -i B`.
 * With no sources: an empty inventory (groups all and ungrouped, no hosts); `localhost` stays available
 * as Ansible's implicit localhost (ansible_connection=local) when a pattern names it.
 * Throws ValidationError (codes E_INVENTORY_SYNTAX, E_INVENTORY_NOT_FOUND) with file and line,
 * RunbookError E_INVENTORY_SCRIPT / E_INVENTORY_PLUGIN / E_INVENTORY_VAULT.
 */
export function loadInventory(sources: string[], opts: LoadInventoryOptions = {}): Inventory {
  const cwd = opts.cwd ?? process.cwd();
  const loader = new Loader();
  const resolved: string[] = [];
  for (const src of sources) {
    if (!src) continue;
    if (src.includes(',') && !existsSync(resolve(cwd, expandUser(src)))) {
      loader.parseHostList(src);
      resolved.push(src);
      continue;
    }
    const p = resolve(cwd, expandUser(src));
    if (!existsSync(p)) {
      throw new ValidationError(
        [{ file: src, message: `inventory source not found (resolved to ${p}); pass an existing file or directory with -i` }],
        'E_INVENTORY_NOT_FOUND',
      );
    }
    resolved.push(p);
    try {
      loader.parseSource(p);
    } catch (e) {
      if (e instanceof InventoryParseError) {
        throw new ValidationError([{ file: e.file, line: e.line, message: e.message }], e.code);
      }
      throw e;
    }
  }
  const rinv = loader.inv;
  rinv.reconcile();

  const vf = new VarsFiles();
  const invDirs = varsBaseDirs(resolved);
  const playDirs = (opts.extraVarDirs ?? []).map((d) => resolve(cwd, d));
  const all = rinv.groups.get('all')!;

  const fromDirs = (dirs: string[], sub: 'group_vars' | 'host_vars', names: string[]) => {
    let data: Record<string, unknown> = {};
    for (const d of dirs) for (const n of names) data = { ...data, ...vf.get(d, sub, n) };
    return data;
  };

  const varsFor = (h: RHost): Record<string, unknown> => {
    const hostGroups = sortGroups(h.groups.filter((g) => g.name !== 'all'));
    const names = hostGroups.map((g) => g.name);
    let v: Record<string, unknown> = { ...all.vars };
    for (const g of hostGroups) v = { ...v, ...g.vars };
    v = { ...v, ...fromDirs(invDirs, 'group_vars', ['all']) };
    v = { ...v, ...fromDirs(playDirs, 'group_vars', ['all']) };
    v = { ...v, ...fromDirs(invDirs, 'group_vars', names) };
    v = { ...v, ...fromDirs(playDirs, 'group_vars', names) };
    v = { ...v, ...h.vars };
    v = { ...v, ...fromDirs(invDirs, 'host_vars', [h.name]) };
    v = { ...v, ...fromDirs(playDirs, 'host_vars', [h.name]) };
    return v;
  };

  const hosts = new Map<string, InventoryHost>();
  for (const h of rinv.hosts.values()) {
    hosts.set(h.name, { name: h.name, vars: varsFor(h), groups: ['all', ...h.groups.filter((g) => g.name !== 'all').map((g) => g.name)] });
  }
  const groups = new Map<string, InventoryGroup>();
  for (const g of rinv.groups.values()) {
    const fileVars = fromDirs([...invDirs, ...playDirs], 'group_vars', [g.name]);
    groups.set(g.name, {
      name: g.name,
      hosts: g.hosts.map((h) => h.name),
      children: g.childGroups.map((c) => c.name),
      vars: { ...g.vars, ...fileVars },
      depth: g.depth,
      priority: g.priority,
    });
  }
  const implicitHosts = new Map<string, InventoryHost>();
  for (const n of LOCALHOST_NAMES) {
    if (rinv.hosts.has(n)) continue;
    const h = new RHost(n);
    h.implicit = true;
    h.vars = { ansible_connection: 'local' };
    implicitHosts.set(n, { name: n, vars: varsFor(h), groups: ['all'], implicit: true });
  }
  return { sources: resolved, hosts, groups, warnings: loader.warnings, implicitHosts };
}
