/** An Ansible-compatible inventory, after loading. Order of hosts is Ansible's order. */
export interface InventoryHost {
  name: string;
  /** Variables merged in Ansible precedence (all < parents < children < host), without runbook vars or -e. */
  vars: Record<string, unknown>;
  /** Every group the host belongs to, directly or through children, including `all`. */
  groups: string[];
  /** Ansible's implicit localhost (not in any group; only selected when named explicitly). */
  implicit?: boolean;
}

export interface InventoryGroup {
  name: string;
  /** Direct hosts only, in file order. */
  hosts: string[];
  /** Direct child groups. */
  children: string[];
  vars: Record<string, unknown>;
  /** Longest path from `all` (all = 0); used for variable precedence. Absent: computed from children. */
  depth?: number;
  /** ansible_group_priority (default 1). */
  priority?: number;
}

export interface Inventory {
  /** Source files/dirs, for messages. */
  sources: string[];
  hosts: Map<string, InventoryHost>;
  groups: Map<string, InventoryGroup>;
  /** Non-fatal notes Ansible would print as warnings (skipped keys...). */
  warnings?: string[];
  /** Variables of the implicit localhost per alias (localhost, 127.0.0.1, ::1), used when a pattern names it. */
  implicitHosts?: Map<string, InventoryHost>;
}

/** How to reach a host, from its merged variables (ansible_* and CLI overrides). */
export interface ConnectionSpec {
  kind: 'ssh' | 'local';
  /** Inventory name. */
  name: string;
  /** Address to connect to (ansible_host, else name). */
  address: string;
  port?: number;
  user?: string;
  privateKeyFile?: string;
  password?: string;
  become?: boolean;
  becomeUser?: string;
  becomePassword?: string;
  /** Raw ansible_ssh_common_args / ansible_ssh_extra_args, e.g. "-o ProxyJump=bastion". */
  sshArgs?: string;
}
