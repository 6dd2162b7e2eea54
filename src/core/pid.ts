import { hostname } from 'node:os';

/**
 * Whether a process named by controller host name and pid still runs. Only this machine can be looked at;
 * for another controller the answer is undefined (cannot tell).
 */
export function processAlive(controller: string, pid: number): boolean | undefined {
  if (controller !== hostname()) return undefined;
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
