/**
 * OpenAI's API over generate(): a validated request becomes a prompt and GenerateOptions, and the
 * generation's text becomes OpenAI's response objects and stream chunks. Nothing here touches HTTP
 * or the model, so the shapes can be read (and changed) in one place.
 */
import type { GenerateOptions, GenerationResult } from '../engine/generate.js';
import { ApiError } from './errors.js';
import { chatLogprobs, completionLogprobs, type ScoredToken } from './logprobs.js';
import type { ChatMessage, ChatRequest, CompletionRequest } from './schema.js';

export type FinishReason = GenerationResult['finishReason'];

export interface Usage { prompt_tokens: number; completion_tokens: number; total_tokens: number }

/** One completion a request asks for: a prompt (text or token ids) and how to generate from it. */
export interface ChoiceRun {
  prompt: string | number[];
  options: GenerateOptions;
  /** Which of the request's prompts it continues (several choices share one with n > 1). */
  promptIndex: number;
}

/** What one choice came to, for the non-streamed response. */
export interface ChoiceResult { text: string; finish: FinishReason; tokens: ScoredToken[] | null }

/**
 * One request, ready to run: what to generate and how to answer. Choices are in OpenAI's index
 * order (prompt by prompt, n of each). `tokens` are the log-probabilities a response, chunk or final
 * chunk carries: null without logprobs (the shapes' `logprobs: null`).
 */
export interface Job {
  choices: ChoiceRun[];
  /** The request field the prompts came from, named when the engine rejects one. */
  promptParam: 'prompt' | 'messages';
  /** Completions' echo: the prompt's text (and with logprobs its tokens) comes first in the answer. */
  echo: boolean;
  /** The answer carries logprobs (of the generated tokens; of the prompt's too with echo). */
  logprobs: boolean;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with usage and no choices before [DONE]. */
  streamUsage: boolean;
  /** The transcript ends "assistant:", so the model's reply starts with a space a chat client doesn't want. */
  trimStart: boolean;
  /** Chunks a choice's stream opens with, before any text (chat: the assistant role). */
  opening(index: number): object[];
  chunk(index: number, text: string, tokens: ScoredToken[] | null): object;
  finalChunk(index: number, finish: FinishReason, tokens: ScoredToken[] | null): object;
  usageChunk(usage: Usage): object;
  response(results: ChoiceResult[], usage: Usage): object;
}

/** The stop sequence that ends the assistant's turn in the chat transcript. */
export const CHAT_STOP = '\nuser:';

/**
 * OPT has no chat template, so a conversation is rendered as a plain transcript, one "role: content"
 * per message and an open assistant turn:
 *
 *   system: You are a helpful assistant.
 *   user: Hello!
 *   assistant:
 *
 * and generation stops when the model starts the next "\nuser:" line. ("developer" is written as
 * "system"; text parts of one message are joined with newlines.)
 */
export function chatTranscript(messages: ChatMessage[]): string {
  const turns = messages.map((m) => {
    const role = m.role === 'developer' ? 'system' : m.role;
    const content = typeof m.content === 'string' ? m.content : m.content.map((p) => p.text).join('\n');
    return `${role}: ${content}`;
  });
  return [...turns, 'assistant:'].join('\n');
}

/** A request naming another model is OpenAI's 404 model_not_found; leaving it out means ours. */
export function checkModel(requested: string | null | undefined, served: string): void {
  if (requested != null && requested !== served) {
    throw new ApiError(404, `The model \`${requested}\` does not exist: this server serves \`${served}\``, 'model', 'model_not_found');
  }
}

/**
 * A request's usage over its choices: each prompt's tokens once (as OpenAI counts them, though with
 * n > 1 the prompt runs once a choice here), every choice's generated tokens. prompt_tokens counts
 * the </s> OPT's tokenizer puts first: it is a token the model reads.
 */
export function usage(choices: readonly ChoiceRun[], results: readonly GenerationResult[]): Usage {
  const prompts = new Map<number, number>();
  results.forEach((r, i) => prompts.set(choices[i].promptIndex, r.promptIds.length));
  const prompt = [...prompts.values()].reduce((a, x) => a + x, 0), completion = results.reduce((a, r) => a + r.generatedIds.length, 0);
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

/** The most completions one request may ask for (its prompts × n). */
export const MAX_CHOICES = 128;

/**
 * Each prompt n times, in OpenAI's index order. Choice j of a prompt samples with seed + j, so
 * that a seeded request with n > 1 gets n different samples, the first the same as with n = 1.
 */
function choiceRuns(prompts: (string | number[])[], n: number, o: GenerateOptions): ChoiceRun[] {
  if (prompts.length * n > MAX_CHOICES) {
    throw new ApiError(400, `${prompts.length} prompt(s) × n = ${n} asks for ${prompts.length * n} completions: at most ${MAX_CHOICES} per request`, prompts.length > 1 ? 'prompt' : 'n');
  }
  return prompts.flatMap((prompt, promptIndex) => Array.from({ length: n }, (_, j) => ({
    // (seededRandom takes the seed mod 2^32: so does seed + j, exactly, for any integer seed.)
    prompt, promptIndex, options: o.seed === undefined || j === 0 ? o : { ...o, seed: (o.seed >>> 0) + j },
  })));
}

type Common = Pick<CompletionRequest, 'temperature' | 'top_p' | 'top_k' | 'seed' | 'stop' | 'stream' | 'stream_options'>;

function options(r: Common, maxTokens: number, extraStop: string[] = []): GenerateOptions {
  const stop = r.stop == null ? [] : typeof r.stop === 'string' ? [r.stop] : r.stop;
  return {
    maxTokens,
    // OpenAI's default temperature is 1; generate() treats undefined the same way.
    temperature: r.temperature ?? 1,
    topP: r.top_p ?? undefined,
    topK: r.top_k ?? undefined,
    seed: r.seed ?? undefined,
    stop: [...stop, ...extraStop],
  };
}

const created = () => Math.floor(Date.now() / 1000);
const newId = (prefix: string) => `${prefix}-${crypto.randomUUID().replaceAll('-', '')}`;

/** OpenAI's documented default for /v1/completions. */
export const DEFAULT_COMPLETION_TOKENS = 16;

/** The prompts of a completions request: a string or token ids, or an array of several of either. */
export function completionPrompts(prompt: CompletionRequest['prompt']): (string | number[])[] {
  if (typeof prompt === 'string') return [prompt];
  return typeof prompt[0] === 'number' ? [prompt as number[]] : (prompt as (string | number[])[]);
}

export function completionJob(r: CompletionRequest, model: string): Job {
  const id = newId('cmpl'), t = created();
  const head = { id, object: 'text_completion', created: t, model };
  const echo = r.echo ?? false, logprobs = r.logprobs ?? null;
  const choice = (index: number, text: string, tokens: ScoredToken[] | null, finish: FinishReason | null) => ({
    text, index, logprobs: tokens && completionLogprobs(tokens), finish_reason: finish,
  });
  return {
    choices: choiceRuns(completionPrompts(r.prompt), r.n ?? 1, {
      ...options(r, r.max_tokens ?? DEFAULT_COMPLETION_TOKENS),
      ...(logprobs !== null ? { logprobs } : {}),
      ...(logprobs !== null && echo ? { promptLogprobs: true } : {}),
    }),
    promptParam: 'prompt',
    echo,
    logprobs: logprobs !== null,
    stream: r.stream ?? false,
    streamUsage: r.stream_options?.include_usage ?? false,
    trimStart: false,
    opening: () => [],
    chunk: (i, text, tokens) => ({ ...head, choices: [choice(i, text, tokens, null)] }),
    finalChunk: (i, finish, tokens) => ({ ...head, choices: [choice(i, '', tokens, finish)] }),
    usageChunk: (u) => ({ ...head, choices: [], usage: u }),
    response: (results, u) => ({ ...head, choices: results.map((c, i) => choice(i, c.text, c.tokens, c.finish)), usage: u }),
  };
}

/** Without max_tokens a chat reply may run to the end of the context, as OpenAI's does. */
export function chatJob(r: ChatRequest, model: string, contextTokens: number): Job {
  const id = newId('chatcmpl'), t = created();
  const head = { id, object: 'chat.completion.chunk', created: t, model };
  const logprobs = r.logprobs === true;
  const lp = (tokens: ScoredToken[] | null) => tokens && chatLogprobs(tokens);
  const delta = (index: number, d: object, tokens: ScoredToken[] | null, finish: FinishReason | null) => ({
    ...head, choices: [{ index, delta: d, logprobs: lp(tokens), finish_reason: finish }],
  });
  return {
    choices: choiceRuns([chatTranscript(r.messages)], r.n ?? 1, {
      ...options(r, r.max_completion_tokens ?? r.max_tokens ?? contextTokens, [CHAT_STOP]),
      ...(logprobs ? { logprobs: r.top_logprobs ?? 0 } : {}),
    }),
    promptParam: 'messages',
    echo: false,
    logprobs,
    stream: r.stream ?? false,
    streamUsage: r.stream_options?.include_usage ?? false,
    trimStart: true,
    opening: (i) => [delta(i, { role: 'assistant', content: '' }, null, null)],
    chunk: (i, text, tokens) => delta(i, { content: text }, tokens, null),
    finalChunk: (i, finish, tokens) => delta(i, {}, tokens, finish),
    usageChunk: (u) => ({ ...head, choices: [], usage: u }),
    response: (results, u) => ({
      id, object: 'chat.completion', created: t, model,
      choices: results.map((c, i) => ({ index: i, message: { role: 'assistant', content: c.text }, logprobs: lp(c.tokens), finish_reason: c.finish })),
      usage: u,
    }),
  };
}
