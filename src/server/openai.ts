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

/**
 * One request, ready to run: what to generate and how to answer. `tokens` are the log-probabilities
 * a response, chunk or final chunk carries: null without logprobs (the shapes' `logprobs: null`).
 */
export interface Job {
  /** Text, or token ids (completions). */
  prompt: string | number[];
  /** The request field the prompt came from, named when the engine rejects the prompt. */
  promptParam: 'prompt' | 'messages';
  options: GenerateOptions;
  /** Completions' echo: the prompt's text (and with logprobs its tokens) comes first in the answer. */
  echo: boolean;
  /** The answer carries logprobs (of the generated tokens; of the prompt's too with echo). */
  logprobs: boolean;
  stream: boolean;
  /** stream_options.include_usage: a last chunk with usage and no choices before [DONE]. */
  streamUsage: boolean;
  /** The transcript ends "assistant:", so the model's reply starts with a space a chat client doesn't want. */
  trimStart: boolean;
  /** Chunks sent before any text (chat: the assistant role). */
  opening(): object[];
  chunk(text: string, tokens: ScoredToken[] | null): object;
  finalChunk(finish: FinishReason, tokens: ScoredToken[] | null): object;
  usageChunk(usage: Usage): object;
  response(text: string, finish: FinishReason, usage: Usage, tokens: ScoredToken[] | null): object;
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

export function usage(r: GenerationResult): Usage {
  // prompt_tokens counts the </s> OPT's tokenizer puts first: it is a token the model reads.
  return { prompt_tokens: r.promptIds.length, completion_tokens: r.generatedIds.length, total_tokens: r.promptIds.length + r.generatedIds.length };
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

/** The prompt of a completions request: a string or token ids, unwrapped from an array of one. */
export function completionPrompt(prompt: CompletionRequest['prompt']): string | number[] {
  if (typeof prompt === 'string') return prompt;
  const first = prompt[0];
  return typeof first === 'number' ? (prompt as number[]) : (first as string | number[]);
}

export function completionJob(r: CompletionRequest, model: string): Job {
  const id = newId('cmpl'), t = created();
  const head = { id, object: 'text_completion', created: t, model };
  const echo = r.echo ?? false, logprobs = r.logprobs ?? null;
  const choice = (text: string, tokens: ScoredToken[] | null, finish: FinishReason | null) => ({
    text, index: 0, logprobs: tokens && completionLogprobs(tokens), finish_reason: finish,
  });
  return {
    prompt: completionPrompt(r.prompt),
    promptParam: 'prompt',
    options: {
      ...options(r, r.max_tokens ?? DEFAULT_COMPLETION_TOKENS),
      ...(logprobs !== null ? { logprobs } : {}),
      ...(logprobs !== null && echo ? { promptLogprobs: true } : {}),
    },
    echo,
    logprobs: logprobs !== null,
    stream: r.stream ?? false,
    streamUsage: r.stream_options?.include_usage ?? false,
    trimStart: false,
    opening: () => [],
    chunk: (text, tokens) => ({ ...head, choices: [choice(text, tokens, null)] }),
    finalChunk: (finish, tokens) => ({ ...head, choices: [choice('', tokens, finish)] }),
    usageChunk: (u) => ({ ...head, choices: [], usage: u }),
    response: (text, finish, u, tokens) => ({ ...head, choices: [choice(text, tokens, finish)], usage: u }),
  };
}

/** Without max_tokens a chat reply may run to the end of the context, as OpenAI's does. */
export function chatJob(r: ChatRequest, model: string, contextTokens: number): Job {
  const id = newId('chatcmpl'), t = created();
  const head = { id, object: 'chat.completion.chunk', created: t, model };
  const logprobs = r.logprobs === true;
  const lp = (tokens: ScoredToken[] | null) => tokens && chatLogprobs(tokens);
  const delta = (d: object, tokens: ScoredToken[] | null, finish: FinishReason | null) => ({
    ...head, choices: [{ index: 0, delta: d, logprobs: lp(tokens), finish_reason: finish }],
  });
  return {
    prompt: chatTranscript(r.messages),
    promptParam: 'messages',
    options: {
      ...options(r, r.max_completion_tokens ?? r.max_tokens ?? contextTokens, [CHAT_STOP]),
      ...(logprobs ? { logprobs: r.top_logprobs ?? 0 } : {}),
    },
    echo: false,
    logprobs,
    stream: r.stream ?? false,
    streamUsage: r.stream_options?.include_usage ?? false,
    trimStart: true,
    opening: () => [delta({ role: 'assistant', content: '' }, null, null)],
    chunk: (text, tokens) => delta({ content: text }, tokens, null),
    finalChunk: (finish, tokens) => delta({}, tokens, finish),
    usageChunk: (u) => ({ ...head, choices: [], usage: u }),
    response: (text, finish, u, tokens) => ({
      id, object: 'chat.completion', created: t, model,
      choices: [{ index: 0, message: { role: 'assistant', content: text }, logprobs: lp(tokens), finish_reason: finish }],
      usage: u,
    }),
  };
}
