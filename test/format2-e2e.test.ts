// Format 2 end to end through bin/runbook on real OpenSSH hosts (test/harness/sshd.ts): an escalating
// runbook whose first alternative fails its verify shows alternative 1 undone, 2 applied, 3 never run,
// and `runbook rollback` puts every host back; apply_if leaves a healthy host untouched. Then the
// controller is killed (SIGKILL) inside an alternative and inside an alternative's undo: resume ends
// where an uninterrupted run ends, rollback where the run started. Host state is read with nsenter
// (fleet.exec), never through runbook.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { waitFor } from './harness/wait.js';
import {
  type JournalLine,
  journalRecords,
  onlyRunId,
  ROOT,
  runbook,
  START_STATE,
  sshFleet,
  startRunbook,
  type TestFleet,
  tmp,
} from './crash-common.js';

const RUNBOOK = `# An escalation like containerd-recover's: a gentle fix that does not hold, then a wipe.
name: escalating
vars:
  nap: 0
  rb_nap: 0
preflight:
  - name: Diagnose
    register: diag
    run: echo {{ state }}
apply_if: diag.stdout.startsWith('broken')
steps:
  - name: Stop
    run: echo stopped > {{ dir }}/svc
    rollback: echo running > {{ dir }}/svc
  - name: Repair
    escalate:
      - name: targeted
        steps:
          - name: Fix records
            run: echo fixed > {{ dir }}/records
            verify: test "$(cat {{ dir }}/records)" = good
            rollback: touch {{ dir }}.undoing; sleep {{ rb_nap }}; rm -f {{ dir }}/records
      - name: wipe
        steps:
          - name: Move data aside
            run: touch {{ dir }}.wipe; sleep {{ nap }}; mv {{ dir }}/data {{ dir }}/data.bak && echo new > {{ dir }}/data
            verify: grep -qx new {{ dir }}/data
            rollback: if [ -e {{ dir }}/data.bak ]; then mv -f {{ dir }}/data.bak {{ dir }}/data; fi
      - name: never
        steps:
          - name: Never
            run: touch {{ dir }}/never
  - name: Start
    run: echo running > {{ dir }}/svc
    rollback: echo stopped > {{ dir }}/svc
`;
const END = 'data=new\ndata.bak=old\nsvc=running\n';
const H = ['h1', 'h2', 'h3'];
const BROKEN = ['h1', 'h2'];

let fleet: TestFleet;
let rb: string;

before(async () => {
  if (!existsSync(join(ROOT, 'dist', 'cli', 'main.js'))) throw new Error('dist/ is missing: run npm run build (npm test does)');
  fleet = await sshFleet(3);
  rb = join(tmp('rb-f2-e2e-'), 'escalating.yml');
  writeFileSync(rb, RUNBOOK);
});
after(async () => {
  await fleet?.stop();
});

async function setup(extra: Record<string, unknown> = {}) {
  await fleet.reset();
  const stateDir = tmp('rb-f2-state-');
  const hv = Object.fromEntries(H.map((h) => [h, { state: BROKEN.includes(h) ? 'broken: records' : 'healthy', ...extra }]));
  const inv = await fleet.inventory(join(stateDir, 'inv.yml'), hv);
  return { stateDir, inv, base: ['--state-dir', stateDir, ...fleet.args] };
}
const states = async () => Object.fromEntries(await Promise.all(H.map(async (h) => [h, await fleet.state(h)] as const)));
const want = (broken: string) => Object.fromEntries(H.map((h) => [h, BROKEN.includes(h) ? broken : START_STATE]));
const alternatives = (recs: JournalLine[], host: string) =>
  recs.filter((r) => r.type === 'alternative-end' && r.host === host).map((r) => `${r.alternative}:${r.status}`);

test('an escalation on real hosts: targeted fails its verify and is undone, wipe holds, never does not run; the healthy host is untouched; rollback restores all', async () => {
  const s = await setup();
  const r = await runbook(['apply', rb, '-i', s.inv, '--yes', ...s.base]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await states(), want(END), 'broken hosts repaired by the wipe (no records, no never), the healthy one as it was');
  assert.match(r.stdout, /h1: Repair: repaired by wipe \(targeted did not hold: step "Fix records": verify did not hold/);
  const recs = journalRecords(s.stateDir);
  for (const h of BROKEN) {
    assert.deepEqual(alternatives(recs, h), ['targeted:undone', 'wipe:held'], h);
    assert.ok(!recs.some((x) => x.type === 'alternative-start' && x.host === h && x.alternative === 'never'), `${h}: never did not start`);
    const group = recs.find((x) => x.type === 'step-end' && x.host === h && x.step === 'Repair');
    assert.equal(group?.alternative, 'wipe');
  }
  // The healthy host: its preflight, then apply_if said no; no main-phase record at all.
  assert.ok(!recs.some((x) => x.host === 'h3' && (x.type === 'host-start' || (x.type === 'step-start' && x.phase === 'step'))));
  assert.match(recs.find((x) => x.type === 'host-end' && x.host === 'h3')?.message ?? '', /^nothing to do: diag\.stdout\.startsWith/);

  const shown = await runbook(['show-run', onlyRunId(s.stateDir), '--state-dir', s.stateDir]);
  assert.equal(shown.code, 0, shown.stderr);
  assert.match(shown.stdout, /"Repair": alternative targeted undone at \S+: step "Fix records": verify did not hold/);
  assert.match(shown.stdout, /"Repair": alternative wipe held/);

  const back = await runbook(['rollback', onlyRunId(s.stateDir), '--yes', ...s.base]);
  assert.equal(back.code, 0, back.stderr);
  assert.deepEqual(await states(), want(START_STATE), 'rollback undid what stayed applied, nothing twice');
  for (const h of H) assert.equal(await fleet.lock(h), null, `no lock left on ${h}`);
});

/** apply in the background, SIGKILL it once `holds` is true of the journal and the hosts. */
async function applyAndKill(extra: Record<string, unknown>, what: string, holds: (recs: JournalLine[]) => Promise<boolean>) {
  const s = await setup(extra);
  const { child, done } = startRunbook(['apply', rb, '-i', s.inv, '--yes', ...s.base]);
  let exited = false;
  void done.then(() => {
    exited = true;
  });
  await waitFor(
    async () => {
      if (exited) throw new Error(`the controller ended before ${what}`);
      return holds(journalRecords(s.stateDir));
    },
    { what },
  );
  child.kill('SIGKILL');
  const r = await done;
  assert.equal(r.signal, 'SIGKILL', `killed while running (stderr: ${r.stderr})`);
  return { ...s, runId: onlyRunId(s.stateDir) };
}

const onHosts = async (p: (h: string) => Promise<boolean>) => {
  for (const h of BROKEN) if (!(await p(h))) return false;
  return true;
};

/** Inside the wipe: its command started on both broken hosts (it naps 3 s there). */
const inWipe = () =>
  applyAndKill({ nap: 3 }, 'the wipe running on both broken hosts', async (recs) => {
    const started = BROKEN.every((h) => recs.some((x) => x.type === 'alternative-start' && x.host === h && x.alternative === 'wipe'));
    return started && onHosts((h) => fleet.started(h, 'wipe'));
  });
/** The dead controller's wipe commands run on to their end on the hosts. */
const wipeFinished = () =>
  waitFor(() => onHosts(async (h) => (await fleet.state(h)) === 'data=new\ndata.bak=old\nsvc=stopped\n'), {
    what: 'the orphaned wipe commands to finish on the hosts',
  });

test('kill -9 inside the wipe alternative, then resume: the same end state as a run that never died', async () => {
  const s = await inWipe();
  await wipeFinished();
  const r = await runbook(['resume', s.runId, ...s.base]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await states(), want(END));
  const recs = journalRecords(s.stateDir);
  for (const h of BROKEN) assert.deepEqual(alternatives(recs, h), ['targeted:undone', 'wipe:held'], h);
});

test('kill -9 inside the wipe alternative, then rollback: every host back to the start', async () => {
  const s = await inWipe();
  await wipeFinished();
  const r = await runbook(['rollback', s.runId, '--yes', ...s.base]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await states(), want(START_STATE));
});

/** Inside the undo of the first alternative: its rollback started on both broken hosts (it naps 3 s). */
const inUndo = () =>
  applyAndKill({ rb_nap: 3 }, 'the undo of targeted running on both broken hosts', async (recs) => {
    const started = BROKEN.every((h) => recs.some((x) => x.type === 'rollback-start' && x.host === h && x.step === 'Fix records'));
    return started && onHosts((h) => fleet.started(h, 'undoing'));
  });

test('kill -9 while the first alternative is being undone, then resume: it is undone, the wipe runs, same end state', async () => {
  const s = await inUndo();
  const r = await runbook(['resume', s.runId, ...s.base]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await states(), want(END));
  const recs = journalRecords(s.stateDir);
  for (const h of BROKEN) assert.deepEqual(alternatives(recs, h), ['targeted:undone', 'wipe:held'], h);
});

test('kill -9 while the first alternative is being undone, then rollback: every host back to the start', async () => {
  const s = await inUndo();
  const r = await runbook(['rollback', s.runId, '--yes', ...s.base]);
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(await states(), want(START_STATE));
});
