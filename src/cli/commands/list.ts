/** `runbook list`: the runbooks found (./runbooks first, then the shipped ones). */
import type { Args } from '../main.js';
import { listRunbooks } from '../../runbook/load.js';
import { colorAllowed, COLORS, NO_COLORS, pad, truncate, width } from '../../report/text.js';

export async function run(_argv: Args): Promise<number> {
  const out = process.stdout;
  const tty = Boolean(out.isTTY);
  const p = colorAllowed(tty) ? COLORS : NO_COLORS;
  out.write(listText(listRunbooks(process.cwd()), { columns: tty ? out.columns : undefined, paint: p }));
  return 0;
}

export function listText(
  entries: Array<{ name: string; file: string; description?: string; destructive: boolean; shipped: boolean }>,
  o: { columns?: number; paint?: typeof COLORS } = {},
): string {
  const p = o.paint ?? NO_COLORS;
  if (entries.length === 0) {
    return 'No runbooks found: put NAME.yml files in ./runbooks/ (see `runbook show hello` for the format).\n';
  }
  const rows = entries.map((e) => [e.name, e.destructive ? 'yes' : 'no', e.shipped ? 'shipped' : './runbooks', e.description ?? '']);
  const head = ['NAME', 'DESTRUCTIVE', 'FROM', 'DESCRIPTION'];
  const w = [0, 1, 2].map((i) => Math.max(width(head[i]), ...rows.map((r) => width(r[i]))));
  const line = (r: string[], bold = false) => {
    let s = `${pad(r[0], w[0])}  ${pad(r[1], w[1])}  ${pad(r[2], w[2])}  `;
    const desc = o.columns !== undefined ? truncate(r[3], Math.max(10, o.columns - 1 - width(s))) : r[3];
    s = (s + desc).replace(/\s+$/, '');
    if (bold) return p.bold(s);
    return r[1] === 'yes' ? s.replace(/^(\S+\s+)yes/, (_m, a: string) => `${a}${p.yellow('yes')}`) : s;
  };
  const lines = [line(head, true), ...rows.map((r) => line(r))];
  lines.push('', p.dim('`runbook show NAME` shows the steps; destructive runbooks ask before they run (or need --yes).'));
  return `${lines.join('\n')}\n`;
}
