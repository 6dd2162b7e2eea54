/** YAML parsed with a map from paths (`steps[2].verify.retries`) to source positions, for messages. */
import { constructFromEvents, parseEvents } from 'js-yaml';

export interface Pos {
  line: number;
  column: number;
} // 1-based
interface NodeLoc {
  /** Where the key of a mapping entry is (undefined for sequence items and the root). */
  key?: Pos;
  /** Where the value starts. */
  value: Pos;
  /** For scalars: style and the value's source range, to locate text inside it. */
  scalarStyle?: number;
  valueStart?: number;
  valueEnd?: number;
}

/** Maps `steps[2].verify.retries` style paths to source positions. */
export class PositionMap {
  private readonly locs = new Map<string, NodeLoc>();
  private readonly lineStarts: number[];
  constructor(readonly source: string) {
    this.lineStarts = [0];
    for (let i = 0; i < source.length; i++) if (source[i] === '\n') this.lineStarts.push(i + 1);
  }
  posOf(offset: number): Pos {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid] <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - this.lineStarts[lo] + 1 };
  }
  set(path: string, loc: NodeLoc): void {
    if (!this.locs.has(path)) this.locs.set(path, loc);
  }
  get(path: string): NodeLoc | undefined {
    return this.locs.get(path);
  }
  /** Position for an issue at `path`: the key of a mapping entry, else the value; else the nearest ancestor. */
  find(path: string, prefer: 'key' | 'value' = 'key'): Pos | undefined {
    let p = path;
    for (;;) {
      const loc = this.locs.get(p);
      if (loc) return prefer === 'key' ? (loc.key ?? loc.value) : loc.value;
      if (p === '') return undefined;
      p = parentPath(p);
    }
  }
  /** Position of a character offset inside a scalar's decoded value, where it can be mapped exactly. */
  findInScalar(path: string, index: number, value: string): Pos | undefined {
    const loc = this.locs.get(path);
    if (!loc || loc.valueStart === undefined) return this.find(path);
    const start = this.posOf(loc.valueStart);
    const before = value.slice(0, index);
    const nl = before.lastIndexOf('\n');
    if (loc.scalarStyle === 4 /* literal block */) {
      const line = start.line + (before.match(/\n/g)?.length ?? 0);
      if (nl < 0) return { line, column: start.column + index };
      const ls = this.lineStarts[line - 1];
      return ls === undefined ? { line, column: 1 } : { line, column: start.column + (index - nl - 1) };
    }
    // Plain or quoted on one line without escapes: offsets map 1:1.
    const raw = this.source.slice(loc.valueStart, loc.valueEnd);
    if (raw === value) return { line: start.line, column: start.column + index };
    return loc.key ?? start;
  }
}

export function parentPath(p: string): string {
  const m = /^(.*?)(?:\.[^.[\]]+|\[\d+\])$/.exec(p);
  return m ? m[1] : '';
}

export function joinPath(parent: string, key: string | number): string {
  if (typeof key === 'number') return `${parent}[${key}]`;
  return parent ? `${parent}.${key}` : key;
}

type Frame =
  | { kind: 'map'; path: string; key: string | null; keyPos?: Pos; expectKey: boolean }
  | { kind: 'seq'; path: string; index: number };

/** Parses YAML into a value plus a path -> position map. Throws YAMLException. */
export function parseYamlWithPositions(source: string, filename: string): { docs: unknown[]; positions: PositionMap } {
  const events = parseEvents(source, { filename });
  const positions = new PositionMap(source);
  const stack: Frame[] = [];
  let docIndex = 0;
  const nodePath = (): { path: string; keyPos?: Pos } | 'key' => {
    const top = stack[stack.length - 1];
    if (!top) return { path: docIndex > 1 ? `#${docIndex}` : '' };
    if (top.kind === 'seq') return { path: joinPath(top.path, top.index++) };
    if (top.expectKey) return 'key';
    top.expectKey = true;
    return { path: joinPath(top.path, top.key ?? '?'), keyPos: top.keyPos };
  };
  for (const e of events) {
    switch (e.type) {
      case 1:
        docIndex++;
        break;
      case 2:
      case 3: {
        const at = nodePath();
        if (at === 'key') {
          // A collection used as a key: give it an unmatchable name.
          const top = stack[stack.length - 1] as Extract<Frame, { kind: 'map' }>;
          top.key = '<complex key>';
          top.keyPos = positions.posOf(e.start);
          top.expectKey = false;
          stack.push({ kind: 'map', path: '<complex key>', key: null, expectKey: true });
          // Keep the frame shape consistent for both kinds.
          if (e.type === 2) stack[stack.length - 1] = { kind: 'seq', path: '<complex key>', index: 0 };
          break;
        }
        positions.set(at.path, { key: at.keyPos, value: positions.posOf(e.start) });
        stack.push(e.type === 2 ? { kind: 'seq', path: at.path, index: 0 } : { kind: 'map', path: at.path, key: null, expectKey: true });
        break;
      }
      case 4: {
        const at = nodePath();
        let off = e.valueStart;
        if (e.style === 2 || e.style === 3) off = Math.max(0, off - 1); // the opening quote
        if (at === 'key') {
          const top = stack[stack.length - 1] as Extract<Frame, { kind: 'map' }>;
          top.key = source.slice(e.valueStart, e.valueEnd);
          if (e.style !== 1) {
            try {
              top.key = String(
                constructFromEvents([{ type: 1, explicitStart: false, explicitEnd: false, directives: [] }, e, { type: 6 }], { source })[0],
              );
            } catch {
              /* keep raw */
            }
          }
          top.keyPos = positions.posOf(off);
          top.expectKey = false;
          break;
        }
        positions.set(at.path, {
          key: at.keyPos,
          value: positions.posOf(off),
          scalarStyle: e.style,
          valueStart: e.valueStart,
          valueEnd: e.valueEnd,
        });
        break;
      }
      case 5: {
        const at = nodePath();
        if (at === 'key') {
          const top = stack[stack.length - 1] as Extract<Frame, { kind: 'map' }>;
          top.key = '<alias>';
          top.expectKey = false;
          top.keyPos = positions.posOf(e.anchorStart);
          break;
        }
        positions.set(at.path, { key: at.keyPos, value: positions.posOf(Math.max(0, e.anchorStart - 1)) });
        break;
      }
      case 6:
        stack.pop();
        break;
    }
  }
  const docs = constructFromEvents(events, { source, filename });
  return { docs, positions };
}
