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
  private constructor(private tok: Tokenizer, files: string[]) { this.files = files; }

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
      return new TextTokenizer(new Tokenizer(json, cfg), what === 'tokenizer.json' ? [what] : ['vocab.json', 'merges.txt']);
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
}
