/**
 * The in-memory inventory while it is being built: a port of Ansible's InventoryData/Group/Host
 * (ansible-core 2.14) with the same ordering rules, so that host order, group children order,
 * depths and the implicit `all`/`ungrouped` handling match `ansible-inventory`.
 */
import { CodedError } from '../core/errors.js';

/** A group graph problem (cycle, self-parent, unknown name); the parsers report it with the file's name and line. */
export class GroupError extends CodedError {
  constructor(
    message: string,
    readonly kind: 'cycle' | 'self' | 'unknown',
  ) {
    super('E_INVENTORY_GROUP', message);
    this.name = 'GroupError';
  }
}

export class RGroup {
  depth = 0;
  priority = 1;
  hosts: RHost[] = [];
  hostNames = new Set<string>();
  vars: Record<string, unknown> = {};
  childGroups: RGroup[] = [];
  parentGroups: RGroup[] = [];
  constructor(readonly name: string) {}

  /** get_ancestors(): every group above, as a set. */
  ancestors(): Set<RGroup> {
    const seen = new Set<RGroup>();
    let todo: RGroup[] = [...this.parentGroups];
    while (todo.length) {
      const next: RGroup[] = [];
      for (const g of todo) {
        if (seen.has(g)) continue;
        seen.add(g);
        next.push(...g.parentGroups);
      }
      todo = next;
    }
    return seen;
  }

  /**
   * get_descendants(include_self=True, preserve_ordering=True). Ansible walks a Python set of groups at
   * each level, so when two groups on the same level both have new children the order between those
   * children is arbitrary in Ansible (it changes from run to run); here it is the order of the level list.
   * `ambiguous` reports whether that happened.
   */
  descendantsOrdered(): { ordered: RGroup[]; ambiguous: boolean } {
    const ordered: RGroup[] = [this, ...this.childGroups];
    const seen = new Set<RGroup>();
    let unprocessed: RGroup[] = uniq([this, ...this.childGroups]);
    let ambiguous = false;
    while (unprocessed.length) {
      for (const g of unprocessed) seen.add(g);
      const next: RGroup[] = [];
      let contributors = 0;
      for (const g of unprocessed) {
        let contributed = false;
        for (const k of g.childGroups) {
          next.push(k);
          if (!seen.has(k)) {
            ordered.push(k);
            contributed = true;
          }
        }
        if (contributed) contributors++;
      }
      if (contributors > 1) ambiguous = true;
      unprocessed = uniq(next.filter((g) => !seen.has(g)));
    }
    return { ordered, ambiguous };
  }

  /** get_hosts(): hosts of this group and every descendant, deduplicated, in Ansible's order. */
  allHosts(): RHost[] {
    const out: RHost[] = [];
    const seen = new Set<RHost>();
    for (const kid of this.descendantsOrdered().ordered) {
      for (const h of kid.hosts) {
        if (seen.has(h)) continue;
        seen.add(h);
        if (this.name === 'all' && h.implicit) continue;
        out.push(h);
      }
    }
    return out;
  }

  addChildGroup(group: RGroup): boolean {
    if (group === this) throw new GroupError(`group '${this.name}' cannot be a child of itself`, 'self');
    if (this.childGroups.includes(group)) return false;
    const newAncestors = this.ancestors();
    if (newAncestors.has(group)) {
      throw new GroupError(
        `adding group '${group.name}' as a child of '${this.name}' creates a loop (${group.name} is already above ${this.name})`,
        'cycle',
      );
    }
    const startAncestors = group.ancestors();
    newAncestors.add(this);
    for (const a of startAncestors) newAncestors.delete(a);
    this.childGroups.push(group);
    group.depth = Math.max(this.depth + 1, group.depth);
    group.checkChildrenDepth();
    if (!group.parentGroups.some((g) => g.name === this.name)) {
      group.parentGroups.push(this);
      for (const h of group.allHosts()) h.populateAncestors(newAncestors);
    }
    return true;
  }

  checkChildrenDepth(): void {
    let depth = this.depth;
    const start = this.depth;
    const seen = new Set<RGroup>();
    let unprocessed = new Set<RGroup>(this.childGroups);
    while (unprocessed.size) {
      for (const g of unprocessed) seen.add(g);
      depth++;
      const todo = unprocessed;
      unprocessed = new Set();
      for (const g of todo) {
        if (g.depth < depth) {
          g.depth = depth;
          for (const k of g.childGroups) unprocessed.add(k);
        }
      }
      if (depth - start > seen.size) throw new GroupError(`the group named '${this.name}' has a recursive dependency loop`, 'cycle');
    }
  }

  addHost(host: RHost): boolean {
    if (this.hostNames.has(host.name)) return false;
    this.hosts.push(host);
    this.hostNames.add(host.name);
    host.addGroup(this);
    return true;
  }

  removeHost(host: RHost): boolean {
    if (!this.hostNames.has(host.name)) return false;
    this.hosts.splice(this.hosts.indexOf(host), 1);
    this.hostNames.delete(host.name);
    host.removeGroup(this);
    return true;
  }

  setVariable(key: string, value: unknown): void {
    if (key === 'ansible_group_priority') {
      const n = pyIntOf(value);
      if (n !== undefined) this.priority = n;
      return;
    }
    this.vars[key] = value;
  }
}

export class RHost {
  vars: Record<string, unknown> = {};
  groups: RGroup[] = [];
  implicit = false;
  constructor(
    readonly name: string,
    port?: number,
  ) {
    if (port) this.vars.ansible_port = port;
  }

  populateAncestors(additions: Iterable<RGroup>): void {
    for (const g of additions) if (!this.groups.includes(g)) this.groups.push(g);
  }

  addGroup(group: RGroup): boolean {
    for (const old of group.ancestors()) if (!this.groups.includes(old)) this.groups.push(old);
    if (this.groups.includes(group)) return false;
    this.groups.push(group);
    return true;
  }

  removeGroup(group: RGroup): boolean {
    const i = this.groups.indexOf(group);
    if (i < 0) return false;
    this.groups.splice(i, 1);
    for (const old of group.ancestors()) {
      if (old.name === 'all') continue;
      if (!this.groups.some((g) => g.ancestors().has(old))) this.removeGroup(old);
    }
    return true;
  }
}

export const LOCALHOST_NAMES = ['127.0.0.1', 'localhost', '::1'];

export class RInventory {
  groups = new Map<string, RGroup>();
  hosts = new Map<string, RHost>();

  constructor() {
    this.addGroup('all');
    this.addGroup('ungrouped');
    this.addChild('all', 'ungrouped');
  }

  addGroup(name: string): string {
    if (!this.groups.has(name)) this.groups.set(name, new RGroup(name));
    return name;
  }

  addHost(name: string, group?: string, port?: number): string {
    let g: RGroup | undefined;
    if (group) {
      g = this.groups.get(group);
      if (!g) throw new GroupError(`could not find group ${group} in inventory`, 'unknown');
    }
    let h = this.hosts.get(name);
    if (!h) {
      h = new RHost(name, port);
      this.hosts.set(name, h);
    }
    if (g) g.addHost(h);
    return name;
  }

  setVariable(entity: string, key: string, value: unknown): void {
    const g = this.groups.get(entity);
    if (g) {
      g.setVariable(key, value);
      return;
    }
    const h = this.hosts.get(entity);
    if (h) {
      h.vars[key] = value;
      return;
    }
    throw new GroupError(`could not identify group or host named ${entity}`, 'unknown');
  }

  addChild(group: string, child: string): boolean {
    const g = this.groups.get(group);
    if (!g) throw new GroupError(`${group} is not a known group`, 'unknown');
    const cg = this.groups.get(child);
    if (cg) return g.addChildGroup(cg);
    const h = this.hosts.get(child);
    if (h) return g.addHost(h);
    throw new GroupError(`${child} is not a known host nor group`, 'unknown');
  }

  /** reconcile_inventory(): top-level groups under all, ungrouped hosts into ungrouped. */
  reconcile(): void {
    const all = this.groups.get('all')!;
    const ungrouped = this.groups.get('ungrouped')!;
    for (const g of this.groups.values()) {
      if (g.name !== 'all' && g.ancestors().size === 0) this.addChild('all', g.name);
    }
    for (const h of this.hosts.values()) {
      const mine = h.groups;
      if (mine.includes(ungrouped)) {
        if (mine.some((g) => g !== all && g !== ungrouped)) ungrouped.removeHost(h);
      } else if (!h.implicit) {
        if (mine.length === 0 || (mine.length === 1 && mine[0] === all)) this.addChild('ungrouped', h.name);
      }
    }
  }
}

function uniq<T>(xs: T[]): T[] {
  return [...new Set(xs)];
}

function pyIntOf(v: unknown): number | undefined {
  if (typeof v === 'number') return Math.trunc(v);
  if (typeof v === 'boolean') return v ? 1 : 0;
  if (typeof v === 'string' && /^\s*[+-]?\d+\s*$/.test(v)) return parseInt(v, 10);
  return undefined;
}

/** Ansible's sort_groups: by depth, then ansible_group_priority, then name. */
export function sortGroups(groups: RGroup[]): RGroup[] {
  return [...groups].sort((a, b) => a.depth - b.depth || a.priority - b.priority || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}
