/**
 * Where checkpoint files come from. The engine reads through this small interface so the same code
 * runs in Node (files on disk) and in a browser (fetch, or File objects from a picker).
 */
export interface FileSource {
  /** Human-readable location, used in error messages. */
  readonly location: string;
  exists(name: string): Promise<boolean>;
  size(name: string): Promise<number>;
  /** Reads `length` bytes at `offset` into a fresh buffer; short reads are an error. */
  read(name: string, offset: number, length: number): Promise<Uint8Array>;
  /** Closes any open handles. */
  close(): Promise<void>;
}

export async function readText(src: FileSource, name: string): Promise<string> {
  const n = await src.size(name);
  return new TextDecoder().decode(await src.read(name, 0, n));
}
