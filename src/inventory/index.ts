/** Public API of the inventory layer (Ansible-compatible inventories). */
export { loadInventory, type LoadInventoryOptions } from './load.js';
export { selectHosts, splitHostPattern, type SelectOptions } from './patterns.js';
export { connectionFor, ansibleBool, type ConnectionOverrides } from './connection.js';
export { inventoryListJson, inventoryGraph, hostVarsJson, ansibleJson } from './output.js';
export { parseExtraVars } from './extra-vars.js';
export type { Inventory, InventoryGroup, InventoryHost, ConnectionSpec } from './types.js';
