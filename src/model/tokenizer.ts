import { Tokenizer } from '@huggingface/tokenizers';
import { fail } from '../util/errors.js';
import { readText, type FileSource } from './source.js';
import { tokenizerJsonFromBpeFiles } from './tokenizer-bpe-files.js';

/**
 * The checkpoint's tokenizer through @huggingface/tokenizers (its post-processor prepends </s> for OPT):
 * tokenizer.json, or where a folder has none, the tokenizer.json transformers would build from the
 * GPT-2 BPE files vocab.json and merges.txt (tokenizer-bpe-files.ts).
 */
export class TextTokenizer {
  /** The files it was read from: tokenizer.json, or vocab.json and merges.txt. */
  readonly files: string[];
  /** Byte-level BPE (GPT-2's, OPT's): vocabulary strings spell raw bytes through GPT-2's byte-to-unicode table. */
  private readonly byteLevel: boolean;
  /** Ids of the added tokens (OPT's </s>... and any a fine-tune adds): plain text in the vocabulary, not byte-level pieces. */
  private readonly addedIds: ReadonlySet<number>;
  private constructor(private tok: Tokenizer, files: string[], json: { decoder?: unknown; added_tokens?: unknown }) {
    this.files = files;
    this.byteLevel = isByteLevel(json.decoder);
    const added = Array.isArray(json.added_tokens) ? (json.added_tokens as { id?: unknown }[]) : [];
    this.addedIds = new Set(added.filter((t) => typeof t?.id === 'number').map((t) => t.id as number));
  }

  static async load(src: FileSource): Promise<TextTokenizer> {
    let cfg: Record<string, unknown> = {};
    if (await src.exists('tokenizer_config.json')) {
      let v: unknown;
      try { v = JSON.parse(await readText(src, 'tokenizer_config.json')); } catch { fail(`tokenizer_config.json in ${src.location} is not valid JSON`); }
      if (typeof v !== 'object' || v === null || Array.isArray(v)) fail(`tokenizer_config.json in ${src.location} is not a JSON object`);
      cfg = v as Record<string, unknown>;
    }
    let json: object, what: string;
    if (await src.exists('tokenizer.json')) {
      what = 'tokenizer.json';
      try { json = JSON.parse(await readText(src, 'tokenizer.json')); } catch { fail(`tokenizer.json in ${src.location} is not valid JSON`); }
    } else if ((await src.exists('vocab.json')) && (await src.exists('merges.txt'))) {
      what = 'vocab.json and merges.txt';
      json = await tokenizerJsonFromBpeFiles(src, cfg);
    } else {
      fail(`no tokenizer in ${src.location}: expected tokenizer.json, or vocab.json and merges.txt`);
    }
    try {
      return new TextTokenizer(new Tokenizer(json, cfg), what === 'tokenizer.json' ? [what] : ['vocab.json', 'merges.txt'], json);
    } catch (e) {
      fail(`${what} in ${src.location} could not be loaded: ${(e as Error).message.split('\n')[0]}`);
    }
  }

  /** Token ids with the special tokens the tokenizer adds (OPT: a leading </s>). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  /**
   * `cleanUp` false: without the clean-up of spaces before punctuation (" ," → ","), so that a
   * byte-level BPE decodes back to exactly the text it encoded (the server's echoed prompt offsets).
   */
  decode(ids: number[], skipSpecialTokens = true, cleanUp = true): string {
    return this.tok.decode(ids, { skip_special_tokens: skipSpecialTokens, ...(cleanUp ? {} : { clean_up_tokenization_spaces: false }) });
  }

  /**
   * A token's own bytes (UTF-8 of the text it stands for; a token holding part of a multi-byte
   * character holds only those bytes), or null where the tokenizer is not byte-level BPE or the id is
   * an added token (special or not: its text is as written, not byte-level) or outside the vocabulary.
   * decode([id]) cannot give them: a partial character decodes to U+FFFD.
   */
  tokenBytes(id: number): Uint8Array | null {
    if (!this.byteLevel || this.addedIds.has(id)) return null;
    const piece = this.tok.id_to_token(id);
    if (piece === undefined) return null;
    const out = new Uint8Array(piece.length);
    for (let i = 0; i < piece.length; i++) {
      const b = UNICODE_TO_BYTE.get(piece.charCodeAt(i));
      if (b === undefined) return null; // not a byte-level piece
      out[i] = b;
    }
    return out;
  }
}

function isByteLevel(decoder: unknown): boolean {
  if (typeof decoder !== 'object' || decoder === null) return false;
  const d = decoder as { type?: unknown; decoders?: unknown };
  if (d.type === 'ByteLevel') return true;
  return d.type === 'Sequence' && Array.isArray(d.decoders) && d.decoders.some(isByteLevel);
}

/**
 * GPT-2's bytes_to_unicode, inverted: the printable bytes stand for themselves, the other 68 for
 * code points from 256 up, in byte order.
 */
const UNICODE_TO_BYTE: ReadonlyMap<number, number> = (() => {
  const m = new Map<number, number>();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    const printable = (b >= 0x21 && b <= 0x7e) || (b >= 0xa1 && b <= 0xac) || (b >= 0xae && b <= 0xff);
    m.set(printable ? b : 256 + n++, b);
  }
  return m;
})();
