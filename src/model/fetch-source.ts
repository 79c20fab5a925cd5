import { fail } from '../util/errors.js';
import type { FileSource } from './source.js';

/**
 * Reads checkpoint files over HTTP with Range requests (a browser loading a model folder served
 * next to the page). Only the byte ranges the loader asks for are fetched.
 */
export class FetchFileSource implements FileSource {
  private sizes = new Map<string, number>();
  constructor(readonly location: string) {}

  private url(name: string): string {
    return this.location.replace(/\/$/, '') + '/' + name;
  }

  async exists(name: string): Promise<boolean> {
    try { await this.size(name); return true; } catch { return false; }
  }

  async size(name: string): Promise<number> {
    const known = this.sizes.get(name);
    if (known !== undefined) return known;
    const r = await fetch(this.url(name), { method: 'HEAD' });
    const len = Number(r.headers.get('content-length'));
    if (!r.ok || !Number.isFinite(len)) fail(`missing file ${name} in ${this.location}`);
    this.sizes.set(name, len);
    return len;
  }

  async read(name: string, offset: number, length: number): Promise<Uint8Array> {
    if (length === 0) return new Uint8Array(0);
    const r = await fetch(this.url(name), { headers: { Range: `bytes=${offset}-${offset + length - 1}` } });
    if (!r.ok) fail(`missing file ${name} in ${this.location}`);
    let buf = new Uint8Array(await r.arrayBuffer());
    if (r.status === 200) buf = buf.slice(offset, offset + length); // server ignored Range
    if (buf.length !== length) fail(`${name}: unexpected end of file at byte ${offset + buf.length} (wanted ${length} bytes at ${offset})`);
    return buf;
  }

  async close(): Promise<void> {}
}
