// tier: unit
/**
 * The host side of openSocket (src/transport/stream.ts): the perl and the python3 bridge each copy bytes both
 * ways between their stdio and a unix socket, pass a half-close on, and say in one line why they cannot connect.
 * The gRPC framing (src/actions/grpc.ts) and the sandbox store's messages over such a bridge, against a small
 * HTTP/2 server in this process (a fake for a pure unit test; containerd-sandbox-store.test.ts talks to real
 * containerd).
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, symlinkSync, mkdirSync } from 'node:fs';
import { createServer as createHttp2Server } from 'node:http2';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Duplex } from 'node:stream';
import { BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import { bridgeScript } from '../src/transport/stream.js';
import { GrpcError, grpcOver } from '../src/actions/grpc.js';
import { pruneWithoutCriMetadata, SandboxStore } from '../src/actions/containerd-sandboxes.js';

const dir = mkdtempSync(join(tmpdir(), 'rb-bridge-'));
process.on('exit', () => rmSync(dir, { recursive: true, force: true }));

/** PATH with only sh and the one interpreter, so the bridge must use it. */
function pathWith(interp: 'perl' | 'python3'): string {
  const bin = join(dir, `bin-${interp}`);
  mkdirSync(bin, { recursive: true });
  for (const tool of ['sh', interp]) {
    // the system's own (a pyenv shim on PATH is a bash script that needs more than this PATH)
    const real = spawnSync('sh', ['-c', `[ -x /usr/bin/${tool} ] && echo /usr/bin/${tool} || command -v ${tool}`], {
      encoding: 'utf8',
    }).stdout.trim();
    assert.ok(real, `${tool} is needed on the controller for this test`);
    try {
      symlinkSync(real, join(bin, tool));
    } catch {
      /* made by an earlier test */
    }
  }
  return bin;
}

function listen(server: Server, path: string): Promise<void> {
  return new Promise((resolve) => server.listen(path, resolve));
}

/** Starts the bridge to `sock` and resolves once connected: its stdio as one stream, and how it ended. */
function bridge(sock: string, interp: 'perl' | 'python3') {
  const mark = '<<rb-open-test>>';
  const p = spawn('sh', ['-c', bridgeScript(sock, mark)], { env: { PATH: pathWith(interp) } });
  let stderr = '';
  const ended = new Promise<{ code: number | null; stderr: string }>((resolve) => p.on('close', (code) => resolve({ code, stderr })));
  const open = new Promise<Duplex>((resolve, reject) => {
    p.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
      if (stderr.includes(mark)) resolve(Duplex.from({ readable: p.stdout, writable: p.stdin }));
    });
    void ended.then((e) => reject(new Error(`bridge ended: ${JSON.stringify(e)}`)));
  });
  open.catch(() => {
    /* a test of a failing bridge awaits `ended` only */
  });
  return { open, ended };
}

for (const interp of ['perl', 'python3'] as const) {
  test(`${interp} bridge: bytes both ways, a half-close passed on, exit 0 when the socket closes`, async () => {
    const sock = join(dir, `upper-${interp}.sock`);
    const server = createServer((c) => {
      const got: Buffer[] = [];
      c.on('data', (b) => got.push(b));
      c.on('end', () => c.end(Buffer.concat(got).toString().toUpperCase())); // answers only after our half-close
    });
    await listen(server, sock);
    try {
      const b = bridge(sock, interp);
      const s = await b.open;
      const out: Buffer[] = [];
      s.on('data', (x: Buffer) => out.push(x));
      const big = 'abc'.repeat(100_000); // more than one pipe buffer each way
      s.end(big);
      const e = await b.ended;
      assert.equal(e.code, 0, e.stderr);
      assert.equal(Buffer.concat(out).toString(), big.toUpperCase());
    } finally {
      server.close();
    }
  });

  test(`${interp} bridge: a socket it cannot reach is one line and exit 69`, async () => {
    const e = await bridge(join(dir, 'nobody-here.sock'), interp).ended;
    assert.equal(e.code, 69);
    assert.match(e.stderr.trim(), new RegExp(`^cannot connect to ${dir}/nobody-here\\.sock: No such file or directory$`));
  });
}

const str = (no: number, v: string) => new BinaryWriter().tag(no, WireType.LengthDelimited).string(v).finish();
const msg = (no: number, v: Uint8Array) => new BinaryWriter().tag(no, WireType.LengthDelimited).bytes(v).finish();
const cat = (...parts: Uint8Array[]) => Buffer.concat(parts);
const grpcFrame = (b: Uint8Array) => {
  const f = Buffer.alloc(5 + b.length);
  f.writeUInt32BE(b.length, 1);
  f.set(b, 5);
  return f;
};

test('sandbox store messages over gRPC through the bridge: list decoded, records without CRI metadata deleted, errors carry their status', async () => {
  const sock = join(dir, 'store.sock');
  const deleted: string[] = [];
  const namespaces: string[] = [];
  const h2 = createHttp2Server();
  h2.on('stream', (stream, headers) => {
    namespaces.push(String(headers['containerd-namespace']));
    const chunks: Buffer[] = [];
    stream.on('data', (b: Buffer) => chunks.push(b));
    stream.on('end', () => {
      const body = Buffer.concat(chunks).subarray(5);
      stream.respond({ ':status': 200, 'content-type': 'application/grpc' }, { waitForTrailers: true });
      stream.on('wantTrailers', () => {
        if (headers[':path'] === '/containerd.services.sandbox.v1.Store/Delete' && body.length <= 2)
          stream.sendTrailers({ 'grpc-status': '5', 'grpc-message': encodeURIComponent('sandbox "": not found') });
        else stream.sendTrailers({ 'grpc-status': '0' });
      });
      if (headers[':path'] === '/containerd.services.sandbox.v1.Store/List') {
        const withMeta = cat(str(1, 'good'), msg(7, cat(str(1, 'metadata'), msg(2, str(1, 'type')))), str(10, 'podsandbox'));
        const dangling = cat(str(1, 'dangling'), msg(4, cat(str(1, 'io.kubernetes.pod.name'), str(2, 'web-0'))));
        stream.end(grpcFrame(cat(msg(1, withMeta), msg(1, dangling))));
      } else {
        if (body.length > 2) deleted.push(Buffer.from(body.subarray(2)).toString());
        stream.end(grpcFrame(new Uint8Array()));
      }
    });
  });
  const server = createServer((c) => h2.emit('connection', c));
  await listen(server, sock);
  try {
    const b = bridge(sock, 'perl');
    const ch = grpcOver(await b.open);
    const store = new SandboxStore(ch, 'k8s.io');
    const list = await store.list();
    assert.deepEqual(list, [
      { id: 'good', sandboxer: 'podsandbox', extensions: ['metadata'], labels: {} },
      { id: 'dangling', sandboxer: '', extensions: [], labels: { 'io.kubernetes.pod.name': 'web-0' } },
    ]);
    assert.deepEqual(await pruneWithoutCriMetadata(store), { deleted: ['dangling'], kept: ['good'] });
    assert.deepEqual(deleted, ['dangling']);
    await assert.rejects(store.delete(''), (e: unknown) => e instanceof GrpcError && e.status === 5 && /not found/.test(e.message));
    assert.deepEqual([...new Set(namespaces)], ['k8s.io']);
    ch.close();
    assert.equal((await b.ended).code, 0);
  } finally {
    server.close();
  }
});
