/**
 * Log-probabilities in OpenAI's shapes: the library's per-token entries (generate()'s logprobs and
 * promptLogprobs, token ids) become tokens as text with their offsets in the returned text, then the
 * completions object ({tokens, token_logprobs, top_logprobs, text_offset}) or chat's content list.
 *
 * A token's text is tokenizer.decode([id]) and its bytes that text's UTF-8 (tokenText). A token
 * holding part of a multi-byte character decodes to U+FFFD: its text is then written as OpenAI writes
 * such tokens, "bytes:" and its own bytes (TextTokenizer.tokenBytes) as \xNN escapes
 * ("bytes:\xe2\x80"), so that alternatives stay apart and the bytes can be put back together.
 * Special tokens (OPT's </s>) are "".
 */
import type { PromptTokenLogprob, TokenLogprob } from '../engine/generate.js';
import type { TextTokenizer } from '../model/tokenizer.js';

/** One token of a response's logprobs, before it takes the completions or the chat shape. */
export interface ScoredToken {
  text: string;
  /** The token's UTF-8 bytes (OpenAI's `bytes`); null where they are not known (not byte-level BPE, a split character). */
  bytes: number[] | null;
  /** Character offset in the response's text (echoed prompt included). */
  offset: number;
  /** Null for the first token of a prompt. */
  logprob: number | null;
  top: { text: string; bytes: number[] | null; logprob: number }[] | null;
}

/** Tokens checked past an anchor before the offsets move it (longer than any character or clean-up). */
const LOOKAHEAD = 6;

/**
 * Character offsets of tokens, one token at a time, in the text they decode to. A token's offset is
 * where its text begins: the length of the common prefix of the text decoded from the tokens before
 * it and the text decoded with it. That is the token's position in the whole text even where decoding
 * is not a concatenation of the tokens' texts: a token completing a character split across tokens
 * starts where that character does; a "," after a " " token starts where the tokenizer's clean-up
 * (" ," to ",") put it.
 *
 * Decoding the whole prefix at every token costs O(n^2); this decodes a window that begins at an
 * anchor: a token boundary across which decoding has been seen to concatenate with LOOKAHEAD tokens
 * after it, which no later token can change.
 */
export class TextOffsets {
  private window: number[] = [];
  private windowText = '';
  private anchorAt: number;

  /** `start`: the offset of the first token (the length of text before it, e.g. an echoed prompt); `raw`: decode without the clean-up of spaces. */
  constructor(private tokenizer: TextTokenizer, start = 0, private raw = false) {
    this.anchorAt = start;
  }

  private decode(ids: number[]): string { return this.tokenizer.decode(ids, true, !this.raw); }

  /** The offset of the next token. */
  push(id: number): number {
    const before = this.windowText;
    this.window.push(id);
    this.windowText = this.decode(this.window);
    const offset = this.anchorAt + commonPrefix(before, this.windowText);
    const k = this.window.length - LOOKAHEAD;
    if (k > 0) {
      const left = this.decode(this.window.slice(0, k)), right = this.decode(this.window.slice(k));
      if (left + right === this.windowText) {
        this.anchorAt += left.length;
        this.window = this.window.slice(k);
        this.windowText = right;
      }
    }
    return offset;
  }
}

function commonPrefix(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  let i = 0;
  while (i < n && a.charCodeAt(i) === b.charCodeAt(i)) i++;
  return i;
}

/** Library entries to ScoredTokens, in order: one scorer per run of consecutive tokens (the prompt, the completion). */
export class TokenScorer {
  private offsets: TextOffsets;

  /** `raw`: texts and offsets without the decoder's clean-up of spaces (an echoed prompt: the text as sent). */
  constructor(private tokenizer: TextTokenizer, start = 0, private raw = false) {
    this.offsets = new TextOffsets(tokenizer, start, raw);
  }

  score(e: TokenLogprob | PromptTokenLogprob): ScoredToken {
    return {
      ...tokenText(this.tokenizer, e.id, this.raw),
      offset: this.offsets.push(e.id),
      logprob: e.logprob,
      top: e.top && e.top.map((t) => ({ ...tokenText(this.tokenizer, t.id, this.raw), logprob: t.logprob })),
    };
  }
}

export interface CompletionLogprobs {
  tokens: string[];
  token_logprobs: (number | null)[];
  top_logprobs: (Record<string, number> | null)[];
  text_offset: number[];
}

/**
 * /v1/completions' logprobs object. top_logprobs maps each alternative's text to its log-probability,
 * most likely first, then the chosen token's where it is not among them (so up to logprobs + 1
 * entries, as OpenAI's); where two decode to the same text, the first (the likelier) stays.
 */
export function completionLogprobs(tokens: ScoredToken[]): CompletionLogprobs {
  return {
    tokens: tokens.map((t) => t.text),
    token_logprobs: tokens.map((t) => t.logprob),
    top_logprobs: tokens.map((t) => {
      if (t.top === null) return null;
      // No prototype: a token such as "__proto__" is a key like any other.
      const top = Object.create(null) as Record<string, number>;
      for (const a of t.top) if (!Object.hasOwn(top, a.text)) top[a.text] = a.logprob;
      // As OpenAI's: the chosen token is always there, as one more where it is not among the likeliest.
      if (t.logprob !== null && !Object.hasOwn(top, t.text)) top[t.text] = t.logprob;
      return top;
    }),
    text_offset: tokens.map((t) => t.offset),
  };
}

export interface ChatTokenLogprob {
  token: string;
  logprob: number;
  bytes: number[] | null;
  top_logprobs: { token: string; logprob: number; bytes: number[] | null }[];
}

const utf8 = new TextEncoder();
const strictUtf8 = new TextDecoder('utf-8', { fatal: true });

/** OpenAI's text for a token that is not whole characters: "bytes:\xe2\x80". */
export const bytesText = (bytes: ArrayLike<number>): string =>
  'bytes:' + Array.from(bytes, (b) => `\\x${b.toString(16).padStart(2, '0')}`).join('');

/**
 * A token's text and bytes. The text is the token decoded alone (`raw`: without the clean-up of
 * spaces) and the bytes its UTF-8, so the two agree. A token whose own bytes (the vocabulary's,
 * TextTokenizer.tokenBytes) are not whole characters decodes to U+FFFD: its text is then the
 * "bytes:" form and its bytes are its own, so that a split character's tokens put it back together
 * (null where the tokenizer cannot give them).
 */
export function tokenText(tokenizer: TextTokenizer, id: number, raw = false): { text: string; bytes: number[] | null } {
  const text = tokenizer.decode([id], true, !raw);
  if (!text.includes('\uFFFD')) return { text, bytes: Array.from(utf8.encode(text)) };
  const own = tokenizer.tokenBytes(id);
  if (own === null) return { text, bytes: null };
  let whole = true;
  try { strictUtf8.decode(own); } catch { whole = false; }
  return whole ? { text, bytes: Array.from(own) } : { text: bytesText(own), bytes: Array.from(own) };
}

/** /v1/chat/completions' logprobs.content. */
export function chatLogprobs(tokens: ScoredToken[]): { content: ChatTokenLogprob[] } {
  return {
    content: tokens.map((t) => ({
      token: t.text,
      logprob: t.logprob!, // chat scores only generated tokens: never null
      bytes: t.bytes,
      top_logprobs: (t.top ?? []).map((a) => ({ token: a.text, logprob: a.logprob, bytes: a.bytes })),
    })),
  };
}
