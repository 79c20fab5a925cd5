import { open, stat, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { fail } from '../util/errors.js';
import { resolveModelDir } from './hf-cache.js';
import type { FileSource } from './source.js';

/**
 * Reads checkpoint files from a folder with positioned reads: a file is never held whole in memory.
 * `open` also takes a Hugging Face hub id found in the local cache (src/model/hf-cache.ts); `location` is
 * then the snapshot folder.
 */
export class NodeFileSource implements FileSource {
  private handles = new Map<string, { h: FileHandle; size: number }>();
  constructor(readonly location: string) {}

  static async open(dir: string): Promise<NodeFileSource> {
    const path = await resolveModelDir(dir);
    let s;
    try { s = await stat(path); } catch { fail(`model folder not found: ${path}`); }
    if (!s.isDirectory()) fail(`model path is not a folder: ${path}`);
    return new NodeFileSource(path);
  }

  async exists(name: string): Promise<boolean> {
    try { return (await stat(join(this.location, name))).isFile(); } catch { return false; }
  }

  async size(name: string): Promise<number> {
    try { return (await stat(join(this.location, name))).size; } catch { fail(`missing file ${name} in ${this.location}`); }
  }

  async read(name: string, offset: number, length: number): Promise<Uint8Array> {
    let f = this.handles.get(name);
    if (!f) {
      let h: FileHandle;
      try { h = await open(join(this.location, name), 'r'); } catch { fail(`missing file ${name} in ${this.location}`); }
      f = { h, size: (await h.stat()).size };
      this.handles.set(name, f);
    }
    const { h, size } = f;
    // A corrupt header or directory can ask for any range: refuse one past the end before allocating.
    if (!(offset >= 0 && length >= 0 && offset + length <= size)) fail(`${name}: unexpected end of file (wanted ${length} bytes at ${offset}, the file has ${size})`);
    const buf = new Uint8Array(length);
    let done = 0;
    while (done < length) {
      const { bytesRead } = await h.read(buf, done, length - done, offset + done);
      if (bytesRead === 0) fail(`${name}: unexpected end of file at byte ${offset + done} (wanted ${length} bytes at ${offset})`);
      done += bytesRead;
    }
    return buf;
  }

  async close(): Promise<void> {
    for (const { h } of this.handles.values()) await h.close();
    this.handles.clear();
  }
}
