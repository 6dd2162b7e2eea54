// tier: unit
/**
 * Renderers and reports fed with recorded event sequences (test/fixtures/events/*.ndjson, written
 * by hand after src/engine/events.ts): NDJSON, plain lines, colors, the summary, every report
 * format parsed back, the Prometheus textfile.
 */
import { test, describe, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, readdirSync, writeFileSync, existsSync, mkdirSync, chmodSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { XMLParser } from 'fast-xml-parser';
import type { RunEvent } from '../src/engine/events.js';
import { createRenderer, summarize, writeReports, writeMetrics, type RendererOptions } from '../src/report/index.js';
import { renderMetrics } from '../src/report/metrics.js';
import { safeJson, safeText } from '../src/report/text.js';
import { redactorFor } from '../src/engine/engine.js';
import { Capture } from '../src/transport/capture.js';

const FIX = new URL('./fixtures/events/', import.meta.url).pathname;
const load = (name: string): RunEvent[] =>
  readFileSync(join(FIX, name), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as RunEvent);
const ANSI = /\u001b\[/;
const ISO = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z /;

function sink() {
  const s = new PassThrough();
  let text = '';
  s.on('data', (d: Buffer) => {
    text += d.toString();
  });
  return {
    stream: s,
    get text() {
      return text;
    },
  };
}

async function render(events: RunEvent[], o: Partial<RendererOptions>) {
  const out = sink();
  const err = sink();
  const r = createRenderer({ json: false, verbose: false, tty: false, color: false, stdout: out.stream, stderr: err.stream, ...o });
  for (const e of events) r.onEvent(e);
  await r.close();
  await new Promise((res) => setImmediate(res));
  return { out: out.text, err: err.text };
}

const dirs: string[] = [];
const tmp = () => {
  const d = mkdtempSync(join(tmpdir(), 'runbook-report-'));
  dirs.push(d);
  return d;
};
after(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('NDJSON renderer', () => {
  test('stdout holds exactly the events, one JSON object a line, each with type and time; stderr stays empty', async () => {
    for (const name of ['ok.ndjson', 'mixed.ndjson']) {
      const events = load(name);
      const { out, err } = await render(events, { json: true, verbose: true, tty: true, color: true });
      const lines = out.trimEnd().split('\n');
      assert.equal(lines.length, events.length);
      lines.forEach((l, i) => {
        const o = JSON.parse(l);
        assert.equal(typeof o.type, 'string');
        assert.equal(typeof o.time, 'string');
        assert.deepEqual(o, events[i]);
      });
      assert.equal(err, '');
      assert.doesNotMatch(out, ANSI);
      assert.equal(JSON.parse(lines.at(-1)!).type, 'run-end');
    }
  });
});

describe('plain renderer', () => {
  test('one line per event with an ISO timestamp, no ANSI, then the summary', async () => {
    const events = load('mixed.ndjson');
    const { out, err } = await render(events, { tty: false, color: true });
    assert.equal(err, '', 'no spinner output on stderr');
    assert.doesNotMatch(out, ANSI);
    const [stream, summary] = out.split('\n\n');
    const lines = stream.split('\n');
    assert.equal(lines.length, events.filter((e) => e.type !== 'output').length);
    for (const l of lines) assert.match(l, ISO);
    assert.match(summary, /^Run 20261127-0200-cd34 .*needs-attention \(exit 3\)/);
  });

  test('--verbose streams output prefixed by host, joining split lines', async () => {
    const { out } = await render(load('ok.ndjson'), { verbose: true });
    assert.match(out, /^\S+Z local1 \| hello from local1$/m);
    assert.match(out, /^\S+Z local1 \| partial line$/m);
    const quiet = await render(load('ok.ndjson'), { verbose: false });
    assert.doesNotMatch(quiet.out, /hello from local1/);
  });

  test('the summary names the failing command, its exit code, the stderr tail and what to do now', async () => {
    const { out } = await render(load('mixed.ndjson'), {});
    const summary = out.slice(out.indexOf('\nRun '));
    assert.match(summary, /HOST\s+STATUS\s+STEP\s+DURATION/);
    assert.match(summary, /node2\s+rolled-back\s+Start containerd \(failed\)/);
    assert.match(summary, /command: systemctl start containerd/);
    assert.match(summary, /exit code: 1/);
    assert.match(summary, /\| See "systemctl status containerd.service"/);
    // needs-attention: the failed rollback is shown with its own command and stderr
    assert.match(summary, /rollback failed: "Stop containerd" exit 1/);
    assert.match(summary, /Unit containerd.service is masked/);
    assert.match(summary, /exit code: timed out/);
    const last = summary.trimEnd().split('\n');
    const next = last.findIndex((l) => l.startsWith('What to do now:'));
    assert.ok(next > 0, 'a "what to do now" line');
    assert.match(last.slice(next).join(' '), /Check node3 by hand.*runbook show-run 20261127-0200-cd34/);
  });

  test('an ok run says there is nothing to do', async () => {
    const { out } = await render(load('ok.ndjson'), {});
    assert.match(out, /What to do now: Nothing: every host is ok \(1 changed\)/);
  });
});

describe('colors', () => {
  test('colors only with tty and color, never with NO_COLOR', async () => {
    const events = load('mixed.ndjson');
    const colored = await render(events, { tty: true, color: true, env: {}, columns: 120, rows: 50 });
    assert.match(colored.out, ANSI, 'colored summary on a TTY');
    const noColor = await render(events, { tty: true, color: true, env: { NO_COLOR: '1' }, columns: 120, rows: 50 });
    assert.doesNotMatch(noColor.out, ANSI);
    // The live view on stderr: no color escapes (cursor movement is fine).
    assert.doesNotMatch(noColor.err, /\u001b\[[0-9;]*m/);
    const notTty = await render(events, { tty: false, color: true, env: {} });
    assert.doesNotMatch(notTty.out + notTty.err, ANSI);
  });
});

describe('summarize', () => {
  test('hosts, statuses, changed and failed steps, rollbacks, exit code', () => {
    const s = summarize(load('mixed.ndjson'));
    assert.equal(s.run_id, '20261127-0200-cd34');
    assert.equal(s.runbook, 'containerd-recover');
    assert.equal(s.exit_code, 3);
    assert.equal(s.status, 'needs-attention');
    assert.deepEqual(
      s.hosts.map((h) => [h.host, h.status]),
      [
        ['node1', 'changed'],
        ['node2', 'rolled-back'],
        ['node3', 'needs-attention'],
        ['node4', 'unreachable'],
        ['node5', 'skipped'],
      ],
    );
    assert.deepEqual(s.counts, { ok: 0, changed: 1, failed: 0, 'rolled-back': 1, 'needs-attention': 1, unreachable: 1, skipped: 1 });
    const n1 = s.hosts[0];
    assert.deepEqual(n1.changed_steps, ['Stop containerd', 'Move meta.db aside', 'Start containerd']);
    const n2 = s.hosts[1];
    assert.equal(n2.failed_step, 'Start containerd');
    assert.equal(n2.command, 'systemctl start containerd');
    assert.equal(n2.code, 1);
    assert.match(n2.stderr_tail!, /journalctl -xeu containerd.service/);
    assert.deepEqual(
      n2.rollbacks.map((r) => [r.step, r.status]),
      [
        ['Start containerd', 'ok'],
        ['Stop containerd', 'ok'],
      ],
    );
    assert.equal(s.hosts[2].timed_out, true);
    assert.equal(s.duration_ms, 36600);
    assert.equal(s.started_at, '2026-11-27T02:00:00.000Z');
  });

  test('a cut stream (no run-end) is incomplete and gets its exit code from host statuses', () => {
    const events = load('mixed.ndjson').filter((e) => e.type !== 'run-end');
    const s = summarize(events);
    assert.equal(s.status, 'incomplete');
    assert.equal(s.exit_code, 3);
    assert.match(s.next, /runbook resume 20261127-0200-cd34/);
  });
});

describe('report files', () => {
  test('.json, .md and .xml are written and parse back', async () => {
    const dir = tmp();
    const s = summarize(load('mixed.ndjson'));
    const files = [join(dir, 'r.json'), join(dir, 'sub/r.md'), join(dir, 'r.xml')];
    await writeReports(files, s);
    assert.deepEqual(readdirSync(dir).sort(), ['r.json', 'r.xml', 'sub']);

    const j = JSON.parse(readFileSync(files[0], 'utf8'));
    assert.equal(j.schema, 'runbook-report/1');
    assert.equal(j.exit_code, 3);
    assert.equal(j.hosts.length, 5);
    assert.equal(j.hosts[1].command, 'systemctl start containerd');

    const md = readFileSync(files[1], 'utf8');
    assert.match(md, /^# runbook containerd-recover: NEEDS ATTENTION \(exit 3\)/);
    assert.match(md, /\| node2 \| rolled-back \| Start containerd \(failed\) \|/);
    assert.match(md, /```+\nsystemctl start containerd\n```+/);
    assert.match(md, /\*\*What to do now:\*\*/);

    const xml = readFileSync(files[2], 'utf8');
    const doc = new XMLParser({
      ignoreAttributes: false,
      attributeNamePrefix: '@',
      isArray: (n) => n === 'testcase' || n === 'testsuite',
    }).parse(xml);
    const suites = doc.testsuites.testsuite;
    assert.equal(suites.length, 1, 'one testsuite');
    const cases = suites[0].testcase;
    assert.equal(cases.length, 5, 'one testcase per host');
    assert.equal(suites[0]['@tests'], '5');
    assert.equal(suites[0]['@failures'], '1');
    assert.equal(suites[0]['@errors'], '2');
    assert.equal(suites[0]['@skipped'], '1');
    const byName = Object.fromEntries(cases.map((c: Record<string, unknown>) => [c['@name'], c]));
    assert.equal(byName.node1.failure, undefined);
    assert.equal(byName.node1.error, undefined);
    assert.equal(byName.node2.failure['@type'], 'rolled-back');
    assert.match(byName.node2.failure['#text'], /systemctl start containerd/);
    assert.equal(byName.node3.error['@type'], 'needs-attention');
    assert.equal(byName.node4.error['@type'], 'unreachable');
    assert.ok(byName.node5.skipped !== undefined);
  });

  test('XML survives control characters and markup in command output', async () => {
    const dir = tmp();
    const events = load('mixed.ndjson').map((e) =>
      e.type === 'step-end' && e.host === 'node2' && e.status === 'failed'
        ? { ...e, stderr: 'bad \u001b[31mred\u001b[0m </failure> & "q" \u0001\u0007 ]]>' }
        : e,
    );
    await writeReports([join(dir, 'x.xml')], summarize(events));
    const xml = readFileSync(join(dir, 'x.xml'), 'utf8');
    const doc = new XMLParser({ ignoreAttributes: false, attributeNamePrefix: '@' }).parse(xml);
    const n2 = doc.testsuites.testsuite.testcase.find((c: Record<string, string>) => c['@name'] === 'node2');
    assert.match(n2.failure['#text'], /bad red <\/failure> & "q" {2}\]\]>/);
  });

  test('an unknown extension is a usage error and nothing is written', async () => {
    const dir = tmp();
    await assert.rejects(
      writeReports([join(dir, 'a.json'), join(dir, 'r.txt')], summarize(load('ok.ndjson'))),
      (e: { code?: string; message: string }) => {
        assert.equal(e.code, 'E_USAGE');
        assert.match(e.message, /\.json.*\.md.*\.xml/);
        return true;
      },
    );
    assert.deepEqual(readdirSync(dir), []);
  });
});

/** A strict line parser for the text exposition format, independent of the one in src/. */
function parseProm(text: string) {
  const samples: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  const help = new Set<string>();
  const type = new Map<string, string>();
  assert.ok(text.endsWith('\n'), 'file ends with a newline');
  for (const line of text.slice(0, -1).split('\n')) {
    let m = /^# HELP ([a-zA-Z_:][a-zA-Z0-9_:]*) \S.*$/.exec(line);
    if (m) {
      help.add(m[1]);
      continue;
    }
    m = /^# TYPE ([a-zA-Z_:][a-zA-Z0-9_:]*) (gauge|counter|untyped|summary|histogram)$/.exec(line);
    if (m) {
      type.set(m[1], m[2]);
      continue;
    }
    m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{((?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\.)*",?)*)\} (-?[0-9.e+]+)$/.exec(line);
    assert.ok(m, `sample line "${line}" is name{labels} value`);
    const labels: Record<string, string> = {};
    for (const l of m[2].matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]] = l[2];
    assert.ok(type.has(m[1]), `TYPE line before ${m[1]}`);
    assert.ok(help.has(m[1]), `HELP line for ${m[1]}`);
    samples.push({ name: m[1], labels, value: Number(m[3]) });
  }
  const get = (name: string, labels: Record<string, string>) =>
    samples.filter((s) => s.name === name && Object.entries(labels).every(([k, v]) => s.labels[k] === v));
  return { samples, get, type };
}

describe('metrics file', () => {
  test('node_exporter textfile: every metric with HELP/TYPE, hosts by every status, atomic (no temp file left)', async () => {
    const dir = tmp();
    const file = join(dir, 'runbook.prom');
    const s = summarize(load('mixed.ndjson'));
    await writeMetrics(file, s);
    assert.deepEqual(readdirSync(dir), ['runbook.prom'], 'no temp file left behind');
    const p = parseProm(readFileSync(file, 'utf8'));
    const rb = { runbook: 'containerd-recover' };
    assert.equal(p.get('runbook_last_run_exit_code', rb)[0].value, 3);
    assert.equal(p.get('runbook_last_run_duration_seconds', rb)[0].value, 36.6);
    assert.equal(p.get('runbook_last_run_timestamp_seconds', rb)[0].value, Date.parse('2026-11-27T02:00:36.600Z') / 1000);
    for (const st of ['ok', 'changed', 'failed', 'rolled-back', 'needs-attention', 'unreachable', 'skipped']) {
      const v = p.get('runbook_last_run_hosts', { ...rb, status: st });
      assert.equal(v.length, 1, `hosts{status=${st}} present`);
      assert.equal(v[0].value, s.counts[st as keyof typeof s.counts]);
    }
    assert.equal(p.get('runbook_last_run_hosts', { ...rb, status: 'ok' })[0].value, 0, 'zero counts are written');
    assert.equal(p.get('runbook_last_success_timestamp_seconds', rb).length, 0, 'never succeeded: no success timestamp');
    for (const t of p.type.values()) assert.equal(t, 'gauge');
  });

  test('one status series per host; a --limit run replaces its own hosts and keeps the others', async () => {
    const dir = tmp();
    const file = join(dir, 'runbook.prom');
    const all = summarize(load('mixed.ndjson'));
    await writeMetrics(file, all);
    const p1 = parseProm(readFileSync(file, 'utf8'));
    const rb = { runbook: 'containerd-recover' };
    for (const h of all.hosts) {
      const v = p1.get('runbook_last_run_host_status', { ...rb, host: h.host });
      assert.deepEqual(
        v.map((x) => [x.labels.status, x.value]),
        [[h.status, 1]],
        `${h.host}: exactly one series, its status`,
      );
      assert.equal(p1.get('runbook_last_run_host_timestamp_seconds', { ...rb, host: h.host }).length, 1);
    }
    assert.ok(all.hosts.length >= 3, 'the fixture has several hosts');
    // A later run of one host only (its status changed): that host's series change, the others stay.
    const [first, ...rest] = all.hosts;
    const one = summarize(
      load('mixed.ndjson')
        .filter((e) => !('host' in e) || e.host === first.host)
        .map((e) =>
          e.type === 'run-end' ? { ...e, hosts: { [first.host]: 'ok' } } : e.type === 'run-start' ? { ...e, hosts: [first.host] } : e,
        ),
    );
    await writeMetrics(file, one);
    const p2 = parseProm(readFileSync(file, 'utf8'));
    assert.deepEqual(
      p2.get('runbook_last_run_host_status', { ...rb, host: first.host }).map((x) => x.labels.status),
      ['ok'],
    );
    for (const h of rest) {
      assert.deepEqual(
        p2.get('runbook_last_run_host_status', { ...rb, host: h.host }).map((x) => x.labels.status),
        [h.status],
        `${h.host} kept`,
      );
    }
  });

  test('a host another run had locked keeps its last status series (it was not looked at)', async () => {
    const dir = tmp();
    const file = join(dir, 'runbook.prom');
    const all = summarize(load('mixed.ndjson'));
    await writeMetrics(file, all);
    const [first] = all.hosts;
    const locked = summarize(
      load('mixed.ndjson').map((e) =>
        e.type === 'host-end' && e.host === first.host
          ? { ...e, status: 'skipped', code: 'E_LOCKED', message: 'locked by run x' }
          : e.type === 'run-end'
            ? { ...e, hosts: { ...e.hosts, [first.host]: 'skipped' as const } }
            : e,
      ),
    );
    assert.equal(locked.hosts.find((h) => h.host === first.host)?.status, 'skipped');
    assert.notEqual(first.status, 'skipped');
    await writeMetrics(file, locked);
    const p = parseProm(readFileSync(file, 'utf8'));
    assert.deepEqual(
      p.get('runbook_last_run_host_status', { runbook: 'containerd-recover', host: first.host }).map((x) => x.labels.status),
      [first.status],
    );
  });

  test('a failed run keeps the last success time; other runbooks in the same file are kept', async () => {
    const dir = tmp();
    const file = join(dir, 'runbook.prom');
    const ok = summarize(load('ok.ndjson')); // runbook hello, exit 0
    await writeMetrics(file, ok);
    // An ok run of containerd-recover, then a failed one.
    const okCr = summarize(load('ok.ndjson').map((e) => (e.type === 'run-start' ? { ...e, runbook: 'containerd-recover' } : e)));
    await writeMetrics(file, okCr);
    const before = parseProm(readFileSync(file, 'utf8'));
    const success = before.get('runbook_last_success_timestamp_seconds', { runbook: 'containerd-recover' })[0].value;
    assert.equal(success, Date.parse('2026-11-26T19:50:00.140Z') / 1000);

    await writeMetrics(file, summarize(load('mixed.ndjson')));
    const p = parseProm(readFileSync(file, 'utf8'));
    assert.equal(p.get('runbook_last_success_timestamp_seconds', { runbook: 'containerd-recover' })[0].value, success, 'preserved');
    assert.equal(p.get('runbook_last_run_exit_code', { runbook: 'containerd-recover' })[0].value, 3);
    // hello's series survive untouched
    assert.equal(p.get('runbook_last_run_exit_code', { runbook: 'hello' })[0].value, 0);
    assert.equal(
      p.get('runbook_last_success_timestamp_seconds', { runbook: 'hello' })[0].value,
      Date.parse('2026-11-26T19:50:00.140Z') / 1000,
    );
    assert.equal(p.get('runbook_last_run_hosts', { runbook: 'hello' }).length, 7);
    // exactly one series per (name, labels)
    const keys = p.samples.map((x) => x.name + JSON.stringify(x.labels));
    assert.equal(new Set(keys).size, keys.length);
    // each metric family appears once (HELP/TYPE not repeated)
    const text = readFileSync(file, 'utf8');
    assert.equal(text.match(/^# TYPE runbook_last_run_hosts /gm)?.length, 1);
    assert.deepEqual(readdirSync(dir), ['runbook.prom']);
  });

  test('label values are escaped; foreign metrics in the file are kept', () => {
    const s = summarize(load('ok.ndjson').map((e) => (e.type === 'run-start' ? { ...e, runbook: 'we"ird\\name' } : e)));
    const prev = '# HELP other_metric Something else.\n# TYPE other_metric counter\nother_metric{job="x"} 42\n';
    const text = renderMetrics(s, prev);
    const p = parseProm(text);
    assert.equal(p.get('other_metric', { job: 'x' })[0].value, 42);
    assert.equal(p.get('runbook_last_run_exit_code', { runbook: 'we\\"ird\\\\name' }).length, 1);
  });

  test('an unwritable directory is a clear E_REPORT error', async () => {
    if (process.getuid?.() === 0) {
      // root ignores directory permissions: write below a regular file instead.
      const dir = tmp();
      writeFileSync(join(dir, 'file'), '');
      await assert.rejects(
        writeMetrics(join(dir, 'file', 'x.prom'), summarize(load('ok.ndjson'))),
        (e: { code?: string; message: string }) => {
          assert.equal(e.code, 'E_REPORT');
          assert.match(e.message, /^Cannot write the metrics file .*x\.prom: .*; check the directory exists and is writable\.$/);
          return true;
        },
      );
      return;
    }
    const dir = tmp();
    mkdirSync(join(dir, 'ro'));
    chmodSync(join(dir, 'ro'), 0o500);
    await assert.rejects(writeMetrics(join(dir, 'ro', 'x.prom'), summarize(load('ok.ndjson'))), /Cannot write the metrics file/);
    assert.equal(existsSync(join(dir, 'ro', 'x.prom')), false);
  });
});

test('safeText: every control sequence and character goes, the words stay; safeJson escapes what JSON leaves raw', () => {
  const E = '\u001b';
  const cases: Array<[string, string]> = [
    [`a${E}]52;c;ZXZpbA==\u0007b`, 'ab'], // OSC 52, BEL-terminated
    [`a${E}]0;title${E}\\b`, 'ab'], // OSC, ST-terminated
    [`a${E}]8;;http://x${E}\\link${E}]8;;${E}\\b`, 'alinkb'], // hyperlink
    [`a${E}cb`, 'ab'], // RIS
    [`a${E}P1$qm${E}\\b`, 'ab'], // DCS
    [`a${E}_apc${E}\\b`, 'ab'], // APC
    [`a${E}[31;1mred${E}[0mb`, 'aredb'], // CSI SGR
    [`a${E}[6nb`, 'ab'], // device status report
    [`a${E}[?1049hb`, 'ab'],
    [`a${E}(0b`, 'ab'], // charset
    ['a\u009b31mb', 'ab'], // 8-bit CSI
    ['a\u009d0;t\u009cb', 'ab'], // 8-bit OSC
    [`a${E}]52;c;unterminated`, 'a'],
    ['a\u202eb\u2066c', 'abc'], // bidi
    ['a\u0007\u0008\u007f\rb', 'ab'],
    ['tab\tand\nnewline 日本 é', 'tab\tand\nnewline 日本 é'],
  ];
  for (const [input, want] of cases) assert.equal(safeText(input), want, JSON.stringify(input));
  assert.equal(safeJson({ s: `x${E}]52\u009b\u202e` }), '{"s":"x\\u001b]52\\u009b\\u202e"}');
});

test('Redactor: every rendered form, cut edges, and chunks that split a secret', () => {
  const secret = `Pa'ss$wo"rd-42`;
  const r = redactorFor([secret]);
  assert.equal(r.redact(`a ${secret} b`), 'a *** b');
  assert.equal(r.redact(`echo 'Pa'\\''ss$wo"rd-42'`), 'echo ***', 'shell-quoted');
  assert.equal(r.redact(`"Pa'ss\\$wo\\"rd-42"`), '"***"', 'escaped for double quotes');
  assert.equal(r.redact(JSON.stringify({ t: secret })), '{"t":"***"}', 'as JSON writes it');
  assert.equal(r.redactCut(`wo"rd-42 and more`, { start: true }), '*** and more', 'a tail that starts inside the secret');
  assert.equal(r.redactCut(`some text Pa'ss$w`, { end: true }), 'some text ***', 'a head that ends inside the secret');
  assert.equal(r.redactCut('plain text', { start: true, end: true }), 'plain text');
  const s = r.stream();
  const shown = [s.push('x Pa'), s.push("'ss$wo"), s.push('"rd-42 y Pa'), s.push('nic'), s.end()];
  assert.deepEqual(shown, ['x ', '', '*** y ', 'Panic', '']);
  const t = r.stream();
  assert.equal(t.push('ends with Pa') + t.end(), 'ends with Pa', 'a start of the secret at the real end is shown');
});

test('Capture: keeps the head and the tail of a stream, counts every byte, says what it dropped', () => {
  const c = new Capture(10, 8);
  c.push(Buffer.from('0123456789'));
  c.push(Buffer.from('abc'));
  assert.equal(c.text(), '0123456789abc');
  assert.equal(c.cut, false);
  for (let i = 0; i < 1000; i++) c.push(Buffer.from('xyz'));
  c.push(Buffer.from('TAIL-END'));
  assert.equal(c.bytes, 13 + 3000 + 8);
  assert.equal(c.cut, true);
  assert.equal(c.text(), `0123456789\n… output truncated (${13 + 3000 + 8 - 18} of ${c.bytes} bytes not kept) …\nTAIL-END`);
  const big = new Capture(4, 4);
  big.push(Buffer.alloc(1_000_000, 97));
  assert.equal(big.text(), 'aaaa\n… output truncated (999992 of 1000000 bytes not kept) …\naaaa');
  const early = new Capture(4, 4);
  early.push(Buffer.from('cmd'));
  early.unshift([Buffer.from('pre-')]);
  assert.equal(early.text(), 'pre-cmd');
});
