/**
 * Unary gRPC calls over any byte stream (a unix socket on a host, reached through the SSH connection): node's
 * own HTTP/2 client with `createConnection`, so no listener is opened on the controller. (@grpc/grpc-js
 * dials addresses itself and cannot take a ready stream; the framing of a unary call is five bytes.)
 * Messages are encoded by the caller (@bufbuild/protobuf's wire format).
 */
import type { ClientHttp2Session } from 'node:http2';
import { createRequire } from 'node:module';
import type { Duplex } from 'node:stream';
import { CodedError } from '../core/errors.js';

/** A call that ended with a gRPC status other than OK (`status`: the numeric code, e.g. 5 NOT_FOUND, 12 UNIMPLEMENTED). */
export class GrpcError extends CodedError {
  constructor(
    readonly method: string,
    readonly status: number,
    readonly detail: string,
  ) {
    super('E_GRPC', `${method}: gRPC status ${status}${detail ? `: ${detail}` : ''}`);
    this.name = 'GrpcError';
  }
}

export const GRPC_NOT_FOUND = 5;
export const GRPC_UNIMPLEMENTED = 12;

export interface GrpcChannel {
  /** `method`: "/package.Service/Method"; `headers`: metadata (e.g. containerd-namespace). */
  call(method: string, request: Uint8Array, headers?: Record<string, string>, timeoutMs?: number): Promise<Uint8Array>;
  close(): void;
}

/** A gRPC channel over `stream` (one HTTP/2 connection; calls may run side by side). */
export function grpcOver(stream: Duplex): GrpcChannel {
  // node:http2 (and node:http under it) takes ~17 ms to load: only a run that makes a gRPC call pays for it.
  const { connect, constants } = createRequire(import.meta.url)('node:http2') as typeof import('node:http2');
  const session: ClientHttp2Session = connect('http://localhost', { createConnection: () => stream });
  let broken: Error | undefined;
  session.on('error', (e) => {
    broken = e;
  });
  return {
    call(method, request, headers = {}, timeoutMs = 30_000) {
      if (broken) return Promise.reject(broken);
      return new Promise((resolve, reject) => {
        const req = session.request({
          [constants.HTTP2_HEADER_METHOD]: 'POST',
          [constants.HTTP2_HEADER_PATH]: method,
          'content-type': 'application/grpc',
          te: 'trailers',
          'grpc-timeout': `${Math.max(1, Math.ceil(timeoutMs / 1000))}S`,
          ...headers,
        });
        const chunks: Buffer[] = [];
        let status: string | undefined;
        let detail = '';
        const fromHeaders = (h: Record<string, unknown>): void => {
          if (h['grpc-status'] !== undefined) status = String(h['grpc-status']);
          if (h['grpc-message'] !== undefined) detail = decodeURIComponent(String(h['grpc-message']));
        };
        const timer = setTimeout(() => {
          req.close(constants.NGHTTP2_CANCEL);
          reject(new Error(`${method}: no answer within ${timeoutMs} ms`));
        }, timeoutMs);
        req.on('response', fromHeaders);
        req.on('trailers', fromHeaders);
        req.on('data', (b: Buffer) => chunks.push(b));
        req.on('error', (e) => {
          clearTimeout(timer);
          reject(broken ?? e);
        });
        req.on('end', () => {
          clearTimeout(timer);
          if (status === undefined) return reject(new Error(`${method}: the answer carried no gRPC status (not a gRPC server?)`));
          if (status !== '0') return reject(new GrpcError(method, Number(status), detail));
          const body = Buffer.concat(chunks);
          if (body.length < 5) return resolve(new Uint8Array());
          if (body[0] !== 0) return reject(new Error(`${method}: compressed answers are not supported`));
          const len = body.readUInt32BE(1);
          if (body.length < 5 + len) return reject(new Error(`${method}: answer cut short (${body.length - 5} of ${len} bytes)`));
          resolve(new Uint8Array(body.subarray(5, 5 + len)));
        });
        const frame = Buffer.alloc(5 + request.length);
        frame.writeUInt32BE(request.length, 1);
        frame.set(request, 5);
        req.end(frame);
      });
    },
    close() {
      session.close();
      stream.end();
    },
  };
}
