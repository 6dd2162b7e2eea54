/**
 * containerd's sandbox store (`containerd.services.sandbox.v1.Store`, in 1.7 with the CRI sandbox server and in
 * 2.x): list its records and delete the ones the CRI plugin cannot recover, those without CRI metadata (no
 * "metadata" extension). Such a record makes 1.7 (ENABLE_CRI_SANDBOXES) and 2.0.0-2.0.5 / 2.1.0-2.1.3 fail at
 * start with `failed to recover state: failed to get metadata for stored sandbox "ID": not found`; 2.0.6, 2.1.4
 * and 2.2.0 delete it themselves at start. `ctr sandboxes rm` cannot: it asks the sandbox controller first.
 *
 * Field numbers from containerd's api/services/sandbox/v1/sandbox.proto and api/types/sandbox.proto.
 */
import { BinaryReader, BinaryWriter, WireType } from '@bufbuild/protobuf/wire';
import type { GrpcChannel } from './grpc.js';

const STORE = '/containerd.services.sandbox.v1.Store';
/** The extension the CRI plugin keeps its sandbox metadata in (internal/cri/server/podsandbox MetadataKey). */
export const CRI_METADATA_EXTENSION = 'metadata';

export interface SandboxRecord {
  id: string;
  sandboxer: string;
  /** Names of its extensions (the CRI plugin's "metadata" among them, normally). */
  extensions: string[];
  labels: Record<string, string>;
}

function stringField(no: number, value: string): Uint8Array {
  return new BinaryWriter().tag(no, WireType.LengthDelimited).string(value).finish();
}

/** A map<string, X> entry: its key (field 1) and, for string values, its value (field 2). */
function mapEntry(bytes: Uint8Array): [string, string | undefined] {
  const r = new BinaryReader(bytes);
  let key = '';
  let value: string | undefined;
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1 && wt === WireType.LengthDelimited) key = r.string();
    else if (no === 2 && wt === WireType.LengthDelimited) value = r.string();
    else r.skip(wt, no);
  }
  return [key, value];
}

/** containerd.types.Sandbox: sandbox_id 1, labels 4, extensions 7, sandboxer 10 (the rest is not needed). */
export function decodeSandbox(bytes: Uint8Array): SandboxRecord {
  const r = new BinaryReader(bytes);
  const s: SandboxRecord = { id: '', sandboxer: '', extensions: [], labels: {} };
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (wt !== WireType.LengthDelimited) {
      r.skip(wt, no);
      continue;
    }
    if (no === 1) s.id = r.string();
    else if (no === 10) s.sandboxer = r.string();
    else if (no === 4) {
      const [k, v] = mapEntry(r.bytes());
      s.labels[k] = v ?? '';
    } else if (no === 7) s.extensions.push(mapEntry(r.bytes())[0]);
    else r.skip(wt, no);
  }
  return s;
}

/** StoreListResponse: repeated Sandbox list = 1. */
export function decodeList(bytes: Uint8Array): SandboxRecord[] {
  const r = new BinaryReader(bytes);
  const out: SandboxRecord[] = [];
  while (r.pos < r.len) {
    const [no, wt] = r.tag();
    if (no === 1 && wt === WireType.LengthDelimited) out.push(decodeSandbox(r.bytes()));
    else r.skip(wt, no);
  }
  return out;
}

export class SandboxStore {
  constructor(
    private readonly ch: GrpcChannel,
    private readonly namespace: string,
    /** Per call. */
    private readonly timeoutMs = 30_000,
  ) {}

  private get headers(): Record<string, string> {
    return { 'containerd-namespace': this.namespace };
  }

  async list(): Promise<SandboxRecord[]> {
    return decodeList(await this.ch.call(`${STORE}/List`, new Uint8Array(), this.headers, this.timeoutMs));
  }

  /** StoreDeleteRequest: sandbox_id = 1. */
  async delete(id: string): Promise<void> {
    await this.ch.call(`${STORE}/Delete`, stringField(1, id), this.headers, this.timeoutMs);
  }
}

export interface PruneResult {
  /** Records without CRI metadata, deleted. */
  deleted: string[];
  /** Records with it, left alone. */
  kept: string[];
}

/** Deletes every record of the namespace that has no CRI metadata; the others stay. */
export async function pruneWithoutCriMetadata(store: SandboxStore): Promise<PruneResult> {
  const all = await store.list();
  const result: PruneResult = { deleted: [], kept: [] };
  for (const s of all) {
    if (s.extensions.includes(CRI_METADATA_EXTENSION)) {
      result.kept.push(s.id);
      continue;
    }
    await store.delete(s.id);
    result.deleted.push(s.id);
  }
  return result;
}
