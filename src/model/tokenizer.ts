import { Tokenizer } from '@huggingface/tokenizers';
import { fail } from '../util/errors.js';
import { readText, type FileSource } from './source.js';

/** The checkpoint's tokenizer.json, through @huggingface/tokenizers (its post-processor prepends </s> for OPT). */
export class TextTokenizer {
  private constructor(private tok: Tokenizer) {}

  static async load(src: FileSource): Promise<TextTokenizer> {
    if (!(await src.exists('tokenizer.json'))) fail(`missing file tokenizer.json in ${src.location}`);
    let json: object, cfg: object = {};
    try { json = JSON.parse(await readText(src, 'tokenizer.json')); } catch { fail(`tokenizer.json in ${src.location} is not valid JSON`); }
    if (await src.exists('tokenizer_config.json')) {
      try { cfg = JSON.parse(await readText(src, 'tokenizer_config.json')); } catch { fail(`tokenizer_config.json in ${src.location} is not valid JSON`); }
    }
    try {
      return new TextTokenizer(new Tokenizer(json, cfg));
    } catch (e) {
      fail(`tokenizer.json in ${src.location} could not be loaded: ${(e as Error).message.split('\n')[0]}`);
    }
  }

  /** Token ids with the special tokens the tokenizer adds (OPT: a leading </s>). */
  encode(text: string, addSpecialTokens = true): number[] {
    return this.tok.encode(text, { add_special_tokens: addSpecialTokens }).ids;
  }

  decode(ids: number[], skipSpecialTokens = true): string {
    return this.tok.decode(ids, { skip_special_tokens: skipSpecialTokens });
  }
}
