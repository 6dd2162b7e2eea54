/**
 * What a closed stdout or stderr (`runbook apply ... | head`, a `logger` that died) does. Outside a run the
 * command ends quietly, as before. During a run it changes nothing: the run goes on to its end (or rolls
 * back on a signal), its journal and reports are written, and the exit code is the run's. Output that can no
 * longer be written is dropped; the journal has all of it.
 */
let running = false;
const lost = new Set<string>();

/** A run started (execute): from now on a closed output stream does not end the process; the run's exit code does. */
export function runStarted(): void {
  running = true;
}

/** Handles EPIPE on `stream`: true when the process goes on, false when the command should end now. */
export function outputClosed(name: 'stdout' | 'stderr'): boolean {
  if (!running) return false;
  if (!lost.has(name)) {
    lost.add(name);
    if (name === 'stdout' && !lost.has('stderr')) {
      process.stderr.write(
        'runbook: stdout was closed; the run goes on to its end, and its journal keeps everything (runbook show-run).\n',
      );
    }
  }
  return true;
}
