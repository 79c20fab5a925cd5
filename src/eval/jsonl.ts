/** JSON Lines reading with errors that name the file and line, for the eval data files. */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { fail } from '../util/errors.js';

/** The text of a data file, or a one-line error when it is not there. */
export function readDataFile(path: string): string {
  if (!existsSync(path) || !statSync(path).isFile()) fail(`data file not found: ${path}`);
  return readFileSync(path, 'utf8');
}

export type JsonObject = Record<string, unknown>;

/** One object per non-blank line; `limit` stops after that many objects (the rest is not parsed). */
export function parseJsonl(text: string, file: string, limit = Infinity): { line: number; value: JsonObject }[] {
  const out: { line: number; value: JsonObject }[] = [];
  const lines = text.split('\n');
  for (let i = 0; i < lines.length && out.length < limit; i++) {
    const s = lines[i].trim();
    if (!s) continue;
    let v: unknown;
    try { v = JSON.parse(s); } catch { fail(`${file}:${i + 1}: malformed JSON line`); }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`${file}:${i + 1}: expected a JSON object`);
    out.push({ line: i + 1, value: v as JsonObject });
  }
  return out;
}

/** Field readers: each fails with the file, line and field name. */
export class Fields {
  constructor(private file: string, private line: number, private v: JsonObject) {}
  private where(key: string) { return `${this.file}:${this.line}: field "${key}"`; }
  string(key: string): string {
    const x = this.v[key];
    if (typeof x !== 'string') fail(`${this.where(key)} must be a string`);
    return x;
  }
  strings(key: string, min = 1): string[] {
    const x = this.v[key];
    if (!Array.isArray(x) || x.length < min || !x.every((s) => typeof s === 'string')) fail(`${this.where(key)} must be a list of at least ${min} strings`);
    return x as string[];
  }
  index(key: string, n: number): number {
    const x = this.v[key];
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x >= n) fail(`${this.where(key)} must be an integer in [0, ${n})`);
    return x;
  }
}
