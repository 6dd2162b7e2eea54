/**
 * `runbook inventory -i X [-i Y] [--list|--graph [GROUP]|--host H|--list-hosts] [--limit P]`:
 * the inventory as Ansible sees it. JSON on stdout like ansible-inventory; warnings on stderr.
 */
import { RunbookError } from '../../core/errors.js';
import type { Args } from '../main.js';
import { loadInventory } from '../../inventory/load.js';
import { selectHosts } from '../../inventory/patterns.js';
import { ansibleJson, hostVarsJson, inventoryGraph, inventoryListJson } from '../../inventory/output.js';
import type { Inventory } from '../../inventory/types.js';

/** A copy of the inventory keeping only the selected hosts (like ansible-inventory's --limit). */
function restrict(inv: Inventory, keep: Set<string>): Inventory {
  const hosts = new Map([...inv.hosts].filter(([n]) => keep.has(n)));
  const groups = new Map([...inv.groups].map(([n, g]) => [n, { ...g, hosts: g.hosts.filter((h) => keep.has(h)) }]));
  return { ...inv, hosts, groups };
}

export async function run(argv: Args): Promise<number> {
  const modes = ['list', 'graph', 'host', 'list-hosts'].filter((k) => argv[k] !== undefined && argv[k] !== false);
  if (modes.length !== 1) {
    throw new RunbookError(
      'E_USAGE',
      modes.length === 0
        ? 'Choose what to show: --list, --graph, --host NAME or --list-hosts.'
        : `Choose one of --list, --graph, --host, --list-hosts (got ${modes.map((m) => `--${m}`).join(', ')}).`,
    );
  }
  const cwd = process.cwd();
  const inv = loadInventory((argv.inventory as string[] | undefined) ?? [], { cwd });
  for (const w of inv.warnings ?? []) process.stderr.write(`runbook: warning: ${w}\n`);
  const limit = argv.limit as string | undefined;
  const mode = modes[0];
  if (mode === 'list-hosts') {
    for (const h of selectHosts(inv, limit, { cwd })) process.stdout.write(`${h}\n`);
    return 0;
  }
  const view = limit ? restrict(inv, new Set(selectHosts(inv, limit, { cwd }))) : inv;
  if (mode === 'list') process.stdout.write(`${ansibleJson(inventoryListJson(view))}\n`);
  else if (mode === 'graph') {
    process.stdout.write(`${inventoryGraph(view, argv.group ? String(argv.group) : 'all')}\n`);
  } else process.stdout.write(`${ansibleJson(hostVarsJson(inv, String(argv.host)))}\n`);
  return 0;
}
