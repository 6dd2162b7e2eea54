/**
 * The built-in actions a step can `call:`, and their `with:` parameters: data only, so that the runbook's
 * validation knows them without the code that runs them (index.ts).
 */
export interface ActionParam {
  required: boolean;
  default?: string;
  describe: string;
}

export interface ActionSpec {
  describe: string;
  params: Record<string, ActionParam>;
}

export const ACTION_SPECS = {
  'containerd.sandboxes.prune': {
    describe:
      "deletes every record of containerd's sandbox store (1.7 with the CRI sandbox server, 2.x) that has no CRI metadata, through containerd's socket; prints `deleted ID` and `kept ID` lines",
    params: {
      socket: { required: true, describe: "containerd's socket on the host" },
      namespace: { required: false, default: 'k8s.io', describe: 'containerd namespace' },
    },
  },
} as const satisfies Record<string, ActionSpec>;

export type ActionName = keyof typeof ACTION_SPECS;

/** Problems with a call's action and parameters: [path under the step ('call' or 'with.NAME'), message]. */
export function checkCall(action: unknown, args: unknown): Array<[string, string]> {
  const spec = (ACTION_SPECS as Record<string, ActionSpec>)[String(action)];
  if (typeof action !== 'string' || !spec)
    return [['call', `${JSON.stringify(action)} is not a built-in action (known: ${Object.keys(ACTION_SPECS).join(', ')})`]];
  const given = args && typeof args === 'object' && !Array.isArray(args) ? (args as Record<string, unknown>) : {};
  const out: Array<[string, string]> = [];
  if (args !== undefined && given !== args) out.push(['with', 'is not a mapping of parameters (name: value)']);
  for (const [k, v] of Object.entries(given)) {
    if (!(k in spec.params))
      out.push([`with.${k}`, `${action} has no parameter "${k}" (it takes: ${Object.keys(spec.params).join(', ')})`]);
    else if (typeof v !== 'string' || v.trim() === '')
      out.push([`with.${k}`, `${JSON.stringify(v)} is not a non-empty string (quote it: "...")`]);
  }
  for (const [k, p] of Object.entries(spec.params))
    if (p.required && !(k in given)) out.push(['with', `missing parameter "${k}" of ${action} (${p.describe})`]);
  return out;
}

/** The call's parameters with their defaults. */
export function callArgs(action: ActionName, args: Record<string, string> | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, p] of Object.entries(ACTION_SPECS[action].params as Record<string, ActionParam>)) {
    const v = args?.[k] ?? p.default;
    if (v !== undefined) out[k] = v;
  }
  return out;
}
