/**
 * The request bodies the server accepts, as zod schemas, and their failures as one line naming the
 * field ("max_tokens must be an integer >= 0", "messages[1].role must be ...").
 *
 * Optional fields take null as absent: OpenAI's clients send `"stop": null` and the like. Fields this
 * server doesn't know are ignored (clients send `user` and other bookkeeping); parameters it knows but
 * cannot honour (best_of above n, suffix, penalties, tools) are accepted only at their no-op value, so
 * a client never gets silently different behaviour from what it asked for.
 */
import { z } from 'zod';
import { ApiError } from './errors.js';

/** The message every issue of a field gets: it reads after the field's name. */
const says = (text: string) => ({ error: (issue: { input?: unknown }) => (issue.input === undefined ? 'is required' : text) });

function integer(min: number) {
  const e = says(`must be an integer >= ${min}`);
  return z.number(e).int(e).min(min, e);
}

function intIn(min: number, max: number) {
  const e = says(`must be an integer in [${min}, ${max}]`);
  return z.number(e).int(e).min(min, e).max(max, e);
}

function number(min: number, max: number) {
  const e = says(`must be a number in [${min}, ${max}]`);
  return z.number(e).min(min, e).max(max, e);
}

/** A parameter accepted only at the value that changes nothing (clients often send the default). */
function only(isNoOp: (v: unknown) => boolean, text: string) {
  return z.unknown().refine((v) => v === null || isNoOp(v), { error: text }).optional();
}

const isEmpty = (v: unknown) => (Array.isArray(v) ? v.length === 0 : typeof v === 'object' && v !== null && Object.keys(v).length === 0);

/** Sampling and streaming fields both endpoints share. */
const common = {
  model: z.string(says('must be a string')).nullish(),
  temperature: number(0, 2).nullish(),
  top_p: (() => { const e = says('must be a number in (0, 1]'); return z.number(e).gt(0, e).max(1, e); })().nullish(),
  /** Not OpenAI's: top-k sampling, as `generate --top-k` (0: off). */
  top_k: integer(0).nullish(),
  seed: z.number(says('must be an integer')).int(says('must be an integer')).nullish(),
  stop: z.union([z.string(), z.array(z.string())], says('must be a string or an array of strings')).nullish(),
  stream: z.boolean(says('must be true or false')).nullish(),
  stream_options: z.object({ include_usage: z.boolean(says('must be true or false')).nullish() }, says('must be an object')).nullish(),
  /** Completions per prompt (OpenAI's limit: 128; MAX_CHOICES caps prompts × n). */
  n: intIn(1, 128).nullish(),
  presence_penalty: only((v) => v === 0, 'is not supported (only 0)'),
  frequency_penalty: only((v) => v === 0, 'is not supported (only 0)'),
  logit_bias: only(isEmpty, 'is not supported'),
};

/** OpenAI's limits: completions' logprobs 0 to 5, chat's top_logprobs 0 to 20. */
export const MAX_COMPLETION_LOGPROBS = 5;
export const MAX_TOP_LOGPROBS = 20;

/** A token id; generate() checks it against the vocabulary. */
const tokenId = (e: ReturnType<typeof says>) => z.number(e).int(e);

export const completionRequest = z.object({
  ...common,
  // A string, or token ids (used as given: no </s> added), or an array of several strings or of
  // several token-id arrays: a completion (n of them) for each.
  prompt: (() => {
    // One message for every shape it refuses (zod's own would name an inner bound, e.g. "Too big: expected int").
    const e = says('must be a string, an array of token ids, or a non-empty array of strings or of token-id arrays');
    return z.union([
      z.string(e), z.array(z.string(e), e).min(1, e),
      z.array(tokenId(e), e).min(1, e), z.array(z.array(tokenId(e), e).min(1, e), e).min(1, e),
    ], e);
  })(),
  max_tokens: integer(0).nullish(),
  echo: z.boolean(says('must be true or false')).nullish(),
  logprobs: intIn(0, MAX_COMPLETION_LOGPROBS).nullish(),
  best_of: intIn(1, 128).nullish(),
  suffix: only((v) => v === '', 'is not supported'),
}, says('must be a JSON object')).superRefine((r, ctx) => {
  // best_of > n asks for the likeliest n of best_of samples: not done here; best_of = n changes nothing.
  if (r.best_of != null && r.best_of !== (r.n ?? 1)) {
    ctx.addIssue({ code: 'custom', path: ['best_of'], message: `must equal n (${r.n ?? 1}): choosing the best of more samples is not supported`, input: r.best_of });
  }
});

const textPart = z.object({
  type: z.literal('text', says('must be "text": only text content is supported')),
  text: z.string(says('must be a string')),
}, says('must be an object'));

export const chatMessage = z.object({
  // "developer" is what newer OpenAI clients send in place of "system".
  role: z.enum(['system', 'developer', 'user', 'assistant'], says('must be "system", "user" or "assistant"')),
  content: z.union([z.string(), z.array(textPart)], says('must be a string or an array of text parts')),
}, says('must be an object'));

export const chatRequest = z.object({
  ...common,
  messages: z.array(chatMessage, says('must be an array of messages')).min(1, { error: 'must hold at least one message' }),
  max_tokens: integer(0).nullish(),
  /** OpenAI's newer name for max_tokens in chat. */
  max_completion_tokens: integer(0).nullish(),
  logprobs: z.boolean(says('must be true or false')).nullish(),
  top_logprobs: intIn(0, MAX_TOP_LOGPROBS).nullish(),
  tools: only(isEmpty, 'is not supported: the model has no tool calling'),
  tool_choice: only((v) => v === 'none', 'is not supported: the model has no tool calling'),
  functions: only(isEmpty, 'is not supported: the model has no tool calling'),
  function_call: only((v) => v === 'none', 'is not supported: the model has no tool calling'),
  response_format: only((v) => (v as { type?: unknown }).type === 'text', 'is not supported: only {"type": "text"}'),
}, says('must be a JSON object')).superRefine((r, ctx) => {
  // As OpenAI: top_logprobs only with logprobs: true.
  if (r.top_logprobs != null && r.logprobs !== true) {
    ctx.addIssue({ code: 'custom', path: ['top_logprobs'], message: 'requires logprobs: true', input: r.top_logprobs });
  }
});

export type CompletionRequest = z.infer<typeof completionRequest>;
export type ChatRequest = z.infer<typeof chatRequest>;
export type ChatMessage = z.infer<typeof chatMessage>;

/** ["messages", 1, "role"] -> "messages[1].role". */
function fieldPath(path: PropertyKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : i === 0 ? String(p) : `.${String(p)}`)).join('');
}

/** The body as the schema's type, or a 400 whose message names the first field at fault. */
export function parseBody<S extends z.ZodType>(schema: S, body: unknown): z.infer<S> {
  const r = schema.safeParse(body);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  const param = fieldPath(issue.path);
  throw new ApiError(400, `${param || 'request body'} ${issue.message}`, param || null);
}
