/**
 * `runbook plan NAME -i INV [--probe]`: per host, the steps with their rendered commands
 * (secrets redacted) and each condition decided on the controller where the host's variables
 * decide it. --probe adds a read-only look: preflight, apply_if, if, when, unless.
 */
import type { Args } from '../main.js';
import { type PlannedHost, varsFor } from '../../plan/types.js';
import type { Expr, StepSpec } from '../../runbook/types.js';
import { evalPartial } from '../../plan/expr.js';
import { loadPlan } from '../context.js';
import { renderCommand, rawRefs, lookupPath } from '../../plan/template.js';
import { redactorFor } from '../../engine/engine.js';
import { formatDuration } from '../../core/duration.js';
import { Engine } from '../../engine/engine.js';
import { newRunId } from '../../journal/writer.js';

export async function run(argv: Args): Promise<number> {
  const { plan, runbook } = loadPlan(argv, newRunId());
  const redactor = redactorFor(plan.secrets);
  const allSteps = [...runbook.preflight, ...runbook.steps];
  const registers = new Set(allSteps.map((s) => s.register).filter(Boolean) as string[]);

  const show = (h: PlannedHost, s: StepSpec, tpl: string) => {
    const vars = varsFor(h, s);
    const text = renderCommand(tpl, (path) => (registers.has(path.split('.')[0]) ? `<${path} at run time>` : lookupPath(vars, path)));
    const raw = rawRefs(tpl);
    return redactor.redact(text) + (raw.length ? `    # verbatim (| raw): ${raw.join(', ')}` : '');
  };
  /** A condition before anything ran: true/false when the host's variables decide it, else when it is decided. */
  const decided = (h: PlannedHost, e: Expr, scope: { scope?: number }, when: string): boolean | string =>
    evalPartial(e, { vars: varsFor(h, scope), host: h.name, runId: plan.runId, registers: {} }) ?? when;

  let probe: Map<string, import('../../engine/engine.js').ProbeResult> | undefined;
  if (argv.probe) {
    const { transportsFrom } = await import('../transports.js'); // transports and ssh2 only to connect
    const { close, ...transports } = transportsFrom(argv);
    const engine = new Engine({ plan, emit: () => {}, ...transports });
    try {
      probe = new Map((await engine.probe()).map((p) => [p.host, p]));
    } finally {
      close();
    }
  }

  if (argv.json) {
    const out = {
      run_id: plan.runId,
      runbook: runbook.name,
      batches: plan.batches,
      max_failed: plan.maxFailed,
      forks: plan.forks,
      hosts: plan.hosts.map((h) => ({
        name: h.name,
        ...(runbook.applyIf
          ? { apply_if: { expr: runbook.applyIf.source, value: decided(h, runbook.applyIf, {}, 'after the preflight') } }
          : {}),
        steps: allSteps.map((s) => ({
          ...renderStepJson(s, (t) => show(h, s, t)),
          ...(s.if ? { if: { expr: s.if.source, value: decided(h, s.if, s, 'at run time') } } : {}),
        })),
        ...(probe ? { probe: probe.get(h.name) } : {}),
      })),
    };
    process.stdout.write(`${JSON.stringify(out, null, 2)}\n`);
    return probe && [...probe.values()].some((p) => p.blocked) ? 2 : 0;
  }

  const w = (s: string) => process.stdout.write(`${s}\n`);
  w(
    `runbook ${runbook.name}${runbook.destructive ? ' (destructive)' : ''}: ${plan.hosts.length} host(s) in ${plan.batches.length} batch(es) [${plan.batches.map((b) => b.length).join(', ')}], failure budget ${plan.maxFailed}, forks ${plan.forks}`,
  );
  for (const h of plan.hosts) {
    w('');
    const p = probe?.get(h.name);
    let head = `== ${h.name} (${h.connection.kind === 'local' ? 'local' : `${h.connection.user ? `${h.connection.user}@` : ''}${h.connection.address}${h.connection.port ? `:${h.connection.port}` : ''}`})`;
    if (p) {
      const changes = p.steps.some((s) => s.verdict.endsWith('would run') || s.verdict.startsWith('would try'));
      head += p.blocked
        ? `  BLOCKED: ${p.blocked}`
        : p.applyIf === false
          ? '  nothing to do (apply_if is false)'
          : changes
            ? '  would change'
            : '  nothing to do';
    }
    w(head);
    if (p)
      for (const pf of p.preflight)
        w(`   preflight ${pf.ok ? 'ok    ' : 'FAILED'} ${pf.step}${pf.output ? `: ${pf.output.replace(/\n/g, ' | ')}` : ''}`);
    for (const s of allSteps) {
      if (s.phase === 'step' && s.index === 0 && runbook.applyIf)
        w(`  apply_if: ${runbook.applyIf.source}  -> ${p?.applyIf ?? decided(h, runbook.applyIf, {}, 'after the preflight')}`);
      const verdict = p?.steps.find((x) => x.step === s.name)?.verdict;
      const alt = s.alternative ? ` [alternative ${s.alternative.name}]` : '';
      w(
        `  ${s.phase === 'preflight' ? 'preflight' : `step ${s.index + 1}`}: ${s.name}${alt}${s.local ? ' [on controller]' : ''}${s.become ? ' [sudo]' : ''}${s.escalate ? '' : `  (timeout ${formatDuration(s.timeoutMs)})`}${verdict ? `  -> ${verdict}` : ''}`,
      );
      if (s.if) w(`      if:       ${s.if.source}  -> ${decided(h, s.if, s, 'at run time')}`);
      if (s.escalate) {
        w(`      escalate: ${s.escalate.map((a) => a.name).join(', then ')} (until one holds; a failed one is undone first)`);
        continue;
      }
      if (s.when !== undefined) w(`      when:     ${show(h, s, s.when)}`);
      if (s.unless !== undefined) w(`      unless:   ${show(h, s, s.unless)}`);
      w(`      ${s.call ? 'call:' : 'run: '}     ${indent(show(h, s, s.run))}`);
      if (s.verify)
        w(
          `      verify:   ${indent(show(h, s, s.verify.run))}${s.verify.retries ? `  (retries ${s.verify.retries}, delay ${formatDuration(s.verify.delayMs)})` : ''}`,
        );
      if (s.rollback !== undefined) w(`      rollback: ${indent(show(h, s, s.rollback))}`);
    }
  }
  return probe && [...probe.values()].some((p) => p.blocked) ? 2 : 0;
}

function indent(s: string): string {
  return s.trimEnd().replace(/\n/g, '\n                ');
}

function renderStepJson(s: StepSpec, show: (t: string) => string) {
  return {
    name: s.name,
    phase: s.phase,
    index: s.index,
    local: s.local,
    become: s.become,
    timeout_ms: s.timeoutMs,
    ...(s.when !== undefined ? { when: show(s.when) } : {}),
    ...(s.unless !== undefined ? { unless: show(s.unless) } : {}),
    ...(s.call ? { call: show(s.run) } : { run: show(s.run) }),
    ...(s.verify ? { verify: { run: show(s.verify.run), retries: s.verify.retries, delay_ms: s.verify.delayMs } } : {}),
    ...(s.rollback !== undefined ? { rollback: show(s.rollback) } : {}),
  };
}
