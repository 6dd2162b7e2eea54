/**
 * `runbook serve -c serve.yml`: the long-running service that turns Alertmanager's webhooks into
 * ordinary runs. SIGTERM/SIGINT: stop accepting, let runs in flight end, exit 0 (a second one rolls
 * them back at once). SIGHUP: reload the config; an invalid one is refused and the old one kept.
 */
import { realpathSync } from 'node:fs';
import { join } from 'node:path';
import { RunbookError } from '../../core/errors.js';
import { defaultStateDir } from '../../journal/writer.js';
import { loadServeConfig } from '../../serve/config.js';
import { Service } from '../../serve/service.js';
import type { Args } from '../main.js';

export async function run(argv: Args): Promise<number> {
  const file = String(argv.config);
  const cfg = loadServeConfig(file);
  const stateDir = argv['state-dir'] ?? cfg.stateDir ?? defaultStateDir(process.env);
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} runbook serve: ${line}\n`);
  const service = new Service(cfg, {
    bin: realpathSync(process.argv[1]),
    stateDir: argv['state-dir'] ?? cfg.stateDir,
    auditFile: cfg.audit ?? join(stateDir, 'serve-audit.ndjson'),
    log,
  });
  let at: { address: string; port: number };
  try {
    at = await service.listen();
  } catch (err) {
    throw new RunbookError(
      'E_SERVE_LISTEN',
      `cannot listen on ${cfg.listen.host}:${cfg.listen.port}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}; choose another listen: address or stop what holds it.`,
    );
  }
  log(
    `listening on ${at.address}:${at.port} (pid ${process.pid}); ${cfg.routes.length} route(s), audit ${cfg.audit ?? join(stateDir, 'serve-audit.ndjson')}`,
  );
  for (const r of cfg.routes) {
    if (r.runbook.destructive && !r.unattended)
      log(
        `route ${r.name}: ${r.runbook.name} is destructive and the route does not say unattended: true; its alerts are recorded as approval_needed and nothing runs`,
      );
  }

  return new Promise<number>((resolve) => {
    let stops = 0;
    const onStop = (sig: NodeJS.Signals) => {
      stops++;
      log(`${sig}`);
      void service.stop().then(() => {
        if (service.inFlight === 0) {
          log('stopped');
          for (const s of ['SIGTERM', 'SIGINT', 'SIGHUP'] as const) process.removeAllListeners(s);
          resolve(0);
        }
      });
      if (stops > 2) log('already stopping; runs in flight are rolling back');
    };
    const onHup = () => {
      try {
        service.reload(loadServeConfig(file));
        log(`SIGHUP: ${file} reloaded`);
      } catch (err) {
        service.reloadRefused();
        log(`SIGHUP: ${file} refused, the running config is kept:\n${(err as Error).message}`);
      }
    };
    process.on('SIGTERM', onStop);
    process.on('SIGINT', onStop);
    process.on('SIGHUP', onHup);
  });
}
