/**
 * Turning a text file into the token windows perplexity scores.
 *
 * Documents are separated by `<|endoftext|>` (the convention of the shared data files). Each document
 * is trimmed (the separator sits between blank lines that belong to neither book), tokenized on its own
 * with the tokenizer's leading `</s>` (as OPT saw documents in training), and cut into NON-overlapping
 * windows of `window` tokens that never cross a document boundary. The first token of every window has
 * no context inside the window, so it is context only: a window of n tokens scores n - 1 predictions.
 * This is the usual "chunk into fixed sequences, labels = inputs" evaluation (what the model cards'
 * numbers used); a sliding window would give each token more context and a slightly lower perplexity.
 */
import type { TextTokenizer } from '../model/tokenizer.js';

export const DOCUMENT_SEPARATOR = '<|endoftext|>';

export function splitDocuments(text: string): string[] {
  return text.split(DOCUMENT_SEPARATOR).map((d) => d.trim()).filter((d) => d.length > 0);
}

/**
 * Token ids of each document, in order, keeping only the first `limit` tokens of their concatenation.
 * With a limit, only a prefix of each document is tokenized (the files hold megabytes; BPE on a prefix
 * gives the same tokens except next to the cut, so the prefix is grown until it has a margin to spare).
 */
export function tokenizeDocuments(tokenizer: TextTokenizer, text: string, limit = Infinity): number[][] {
  const out: number[][] = [];
  let left = limit;
  for (const doc of splitDocuments(text)) {
    if (left <= 0) break;
    let ids: number[];
    if (!Number.isFinite(left)) {
      ids = tokenizer.encode(doc);
    } else {
      const margin = 16;
      let chars = Math.min(doc.length, 8 * (left + margin));
      for (;;) {
        ids = tokenizer.encode(doc.slice(0, chars));
        if (chars >= doc.length || ids.length >= left + margin) break;
        chars = Math.min(doc.length, chars * 2);
      }
    }
    ids = ids.slice(0, left);
    left -= ids.length;
    out.push(ids);
  }
  return out;
}

/** Non-overlapping windows of at most `window` tokens per document; a trailing 1-token window scores nothing and is dropped. */
export function windowsOf(docs: number[][], window: number): number[][] {
  const out: number[][] = [];
  for (const ids of docs) {
    for (let i = 0; i < ids.length; i += window) {
      const w = ids.slice(i, i + window);
      if (w.length >= 2) out.push(w);
    }
  }
  return out;
}

/** Predictions the windows score: each window's tokens after its first. */
export function scoredTokens(windows: number[][]): number {
  return windows.reduce((a, w) => a + w.length - 1, 0);
}
