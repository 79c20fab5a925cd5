/**
 * The OpenAI-compatible HTTP API on Node's http module: routing, request bodies, JSON and
 * Server-Sent-Event responses, and errors in OpenAI's shape. Generations run one at a time through a
 * FIFO queue (one model, one runner); requests that arrive meanwhile wait their turn.
 *
 *   GET  /health                 GET  /v1/models[/{id}]
 *   POST /v1/completions         POST /v1/chat/completions
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Generation, GenerationResult } from '../engine/generate.js';
import type { Model } from '../engine/model.js';
import type { TextTokenizer } from '../model/tokenizer.js';
import { DejavuError } from '../util/errors.js';
import { ApiError, errorBody, oneLine } from './errors.js';
import { TokenScorer, type ScoredToken } from './logprobs.js';
import { chatJob, checkModel, completionJob, usage, type ChoiceResult, type Job } from './openai.js';
import { FifoQueue } from './queue.js';
import { chatRequest, completionRequest, parseBody } from './schema.js';

export interface ServerOptions {
  /** The id clients pass as `model` and /v1/models lists (default "dejavu"). */
  modelName?: string;
  /** Largest request body accepted, in bytes (default 1 MiB: a full 2048-token prompt is ~10 KB). */
  maxBodyBytes?: number;
  /** Receives one line for each request that failed on the server's side (a 500). */
  log?: (line: string) => void;
}

export interface DejavuServer {
  /** The Node server, not yet listening. */
  readonly http: Server;
  readonly modelName: string;
  /** Starts listening (port 0: any free port); resolves to the base URL, e.g. http://127.0.0.1:8000. */
  listen(port?: number, host?: string): Promise<string>;
  /**
   * Stops listening and drops open connections (a generation whose client is gone stops at its next
   * token), then waits until the runner is idle. The model stays loaded: dispose it afterwards.
   */
  close(): Promise<void>;
}

interface Exchange {
  req: IncomingMessage;
  res: ServerResponse;
  /** Aborted when the client goes away before its response is complete. */
  signal: AbortSignal;
}

type Handler = (x: Exchange, arg: string) => Promise<void>;

/** An OPT model behind OpenAI's completions and chat completions API. */
export function createServer(model: Model, options: ServerOptions = {}): DejavuServer {
  const name = options.modelName ?? 'dejavu';
  const maxBody = options.maxBodyBytes ?? 1 << 20;
  const log = options.log ?? (() => {});
  const queue = new FifoQueue();
  const createdAt = Math.floor(Date.now() / 1000);
  const card = { id: name, object: 'model', created: createdAt, owned_by: 'dejavu' };

  const routes: Record<string, Record<string, Handler>> = {
    '/health': { GET: async ({ res }) => sendJson(res, 200, { status: 'ok', model: name, backend: model.runner.backend, queue: queue.size }) },
    '/v1/models': { GET: async ({ res }) => sendJson(res, 200, { object: 'list', data: [card] }) },
    '/v1/completions': {
      POST: async (x) => {
        const r = parseBody(completionRequest, await readJson(x.req, maxBody));
        checkModel(r.model, name);
        await serve(x, completionJob(r, name));
      },
    },
    '/v1/chat/completions': {
      POST: async (x) => {
        const r = parseBody(chatRequest, await readJson(x.req, maxBody));
        checkModel(r.model, name);
        await serve(x, chatJob(r, name, model.config.maxPositions));
      },
    },
  };

  const modelRoute: Record<string, Handler> = {
    GET: async ({ res }, id) => {
      checkModel(id, name);
      sendJson(res, 200, card);
    },
  };

  /** The route's handlers and its argument (the id of /v1/models/{id}), or null. */
  function route(path: string): [Record<string, Handler>, string] | null {
    if (Object.hasOwn(routes, path)) return [routes[path], ''];
    const prefix = '/v1/models/';
    if (path.startsWith(prefix) && path.length > prefix.length) {
      let id = path.slice(prefix.length);
      try { id = decodeURIComponent(id); } catch { /* not percent-encoding: the id as written */ }
      return [modelRoute, id];
    }
    return null;
  }

  async function serve(x: Exchange, job: Job): Promise<void> {
    const several = new Set(job.choices.map((c) => c.promptIndex)).size > 1;
    const runs = job.choices.map((c): ChoiceGeneration => {
      // A prompt's problem names the prompt where the request has several.
      const fault = (message: string) => new ApiError(400, several ? `${job.promptParam}[${c.promptIndex}]: ${message}` : message, job.promptParam);
      let gen: Generation;
      try {
        // generate() checks and tokenizes the prompt here but touches the runner only once iterated,
        // so a prompt longer than the context (or a token id outside the vocabulary) is answered at
        // once instead of after the queue.
        gen = model.generate(c.prompt, c.options);
      } catch (e) {
        if (e instanceof DejavuError) throw fault(e.message);
        throw e;
      }
      // A scoring request (echo and logprobs) asking for tokens where the prompt fills the context would
      // get none, and a client dropping the last entry as the generated one (lm-evaluation-harness) would
      // silently drop a prompt token instead: refused, as OpenAI refuses prompt + max_tokens past the context.
      if (job.echo && job.logprobs && (c.options.maxTokens ?? 0) > 0) {
        const n = gen.promptIds.length, ctx = model.config.maxPositions;
        if (n >= ctx) throw fault(`prompt of ${n} tokens fills the model's context of ${ctx}: no room for max_tokens with echo and logprobs (send at most ${ctx - 1} tokens, or max_tokens 0)`);
      }
      // Echoed: a string prompt as it was sent, token ids as they decode (without the clean-up of
      // spaces, so that both are what the prompt's token texts and offsets add up to).
      const promptText = !job.echo ? '' : typeof c.prompt === 'string' ? c.prompt : model.tokenizer.decode(c.prompt, true, false);
      return { gen, promptText };
    });
    await queue.run(async () => {
      if (!x.signal.aborted) await run(x, job, runs, model.tokenizer);
    });
  }

  async function handle(x: Exchange): Promise<void> {
    const { req, res } = x;
    try {
      const path = (req.url ?? '/').split('?')[0];
      const found = route(path);
      if (!found) throw new ApiError(404, `Unknown route: ${req.method} ${path}`);
      const [methods, arg] = found;
      const handler = Object.hasOwn(methods, req.method ?? '') ? methods[req.method!] : undefined;
      if (!handler) {
        const allowed = Object.keys(methods).join(', ');
        res.setHeader('Allow', allowed);
        throw new ApiError(405, `Method ${req.method} is not allowed on ${path} (use ${allowed})`);
      }
      await handler(x, arg);
    } catch (e) {
      if (x.signal.aborted) return; // nobody to answer
      const api = e instanceof ApiError ? e : null;
      const status = api?.status ?? 500;
      const message = api ? api.message : e instanceof DejavuError ? e.message : `internal error: ${oneLine(e)}`;
      if (status >= 500) log(`${req.method} ${req.url}: ${message}`);
      const body = errorBody(status, message, api?.param ?? null, api?.code ?? null);
      if (res.headersSent) res.end(`data: ${JSON.stringify(body)}\n\n`); // a stream already under way
      else sendJson(res, status, body);
    }
  }

  const server = createHttpServer((req, res) => {
    const ac = new AbortController();
    res.on('close', () => { if (!res.writableFinished) ac.abort(); });
    // handle() answers every error itself; this is the last guard against a crash on a rejection.
    handle({ req, res, signal: ac.signal }).catch((e) => log(`${req.method} ${req.url}: ${oneLine(e)}`));
  });
  // Once listening, an 'error' without a listener would end the process.
  const logError = (e: Error) => log(`server error: ${oneLine(e)}`);

  return {
    http: server,
    modelName: name,
    listen(port = 8000, host = '127.0.0.1') {
      return new Promise<string>((resolve, reject) => {
        const failed = (e: NodeJS.ErrnoException) => {
          reject(new DejavuError(`cannot listen on ${host}:${port}: ${e.code === 'EADDRINUSE' ? 'address already in use' : oneLine(e)}`));
        };
        server.once('error', failed);
        server.listen(port, host, () => {
          server.off('error', failed);
          if (!server.listeners('error').includes(logError)) server.on('error', logError);
          const a = server.address() as AddressInfo;
          resolve(`http://${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`);
        });
      });
    },
    async close() {
      if (server.listening) {
        const closed = new Promise<void>((r) => server.close(() => r()));
        server.closeAllConnections();
        await closed;
      }
      await queue.idle();
    },
  };
}

const yieldToEventLoop = (): Promise<void> => new Promise((r) => setImmediate(r));

/** A choice's generation, created (its prompt checked) before the request waits its turn. */
interface ChoiceGeneration { gen: Generation; promptText: string }

/**
 * Runs a request's generations one after another, in choice order, and answers with them: one JSON
 * response, or a stream whose chunks carry each choice's index (choice 0's chunks, then choice 1's...,
 * each ending with its finish_reason), then the usage chunk if asked and [DONE]. A client that goes
 * away stops the generation at its next piece, and the choices after it never run.
 */
async function run(x: Exchange, job: Job, runs: ChoiceGeneration[], tokenizer: TextTokenizer): Promise<void> {
  const stream = job.stream ? new EventStream(x.res) : null;
  const results: GenerationResult[] = [], answers: ChoiceResult[] = [];
  for (const [index, c] of runs.entries()) {
    // A choice may yield no piece (scoring: max_tokens 0): look for a client gone before each one.
    await yieldToEventLoop();
    if (x.signal.aborted) return;
    const done = await runChoice(x.signal, job, index, c, tokenizer, stream);
    if (!done) return;
    results.push(done.result);
    answers.push(done.answer);
  }
  const u = usage(job.choices, results);
  if (!stream) {
    sendJson(x.res, 200, job.response(answers, u));
    return;
  }
  if (job.streamUsage) stream.send(job.usageChunk(u));
  stream.done();
}

/**
 * One choice: its generation, streamed as it comes (stream) or gathered. With logprobs, each chunk
 * carries the tokens generated since the previous chunk (their entries are in gen.logprobs before the
 * piece that shows their text comes), the final chunk any left (a token whose text never showed: the
 * end-of-sequence token, one cut by a stop string); joined, they are the non-streamed response's.
 * With echo, the prompt's text and tokens come first, in a chunk of their own. Null: the client left.
 */
async function runChoice(signal: AbortSignal, job: Job, index: number, { gen, promptText }: ChoiceGeneration, tokenizer: TextTokenizer, stream: EventStream | null): Promise<{ result: GenerationResult; answer: ChoiceResult } | null> {
  let opened = false;
  const send = (chunk: object): void => {
    if (!stream) return;
    if (!opened) for (const o of job.opening(index)) stream.send(o);
    opened = true;
    stream.send(chunk);
  };
  const scorer = job.logprobs ? new TokenScorer(tokenizer, promptText.length) : null;
  let sent = 0;
  /** The generated tokens not yet in a chunk, scored; null without logprobs. */
  const newTokens = (): ScoredToken[] | null => {
    if (!scorer) return null;
    const fresh = gen.logprobs.slice(sent).map((e) => scorer.score(e));
    sent += fresh.length;
    return fresh;
  };
  /** The echoed prompt's tokens (its logprobs are there once the prompt has run); null without logprobs. */
  const promptTokens = (): ScoredToken[] | null => {
    if (!scorer) return null;
    const s = new TokenScorer(tokenizer, 0, true);
    return gen.promptLogprobs.map((e) => s.score(e));
  };
  let echoed = !job.echo;
  const echo = (): void => {
    if (stream && !echoed) send(job.chunk(index, promptText, promptTokens()));
    echoed = true;
  };
  let started = !job.trimStart, lead = 0;
  /**
   * Chat's content is the text trimmed at its start and cut at a stop string: its logprobs are the
   * tokens whose text lies in it (not the trimmed whitespace's, nor the stop string's: the transcript's
   * "\nuser:" ends every finished turn). `end`: where the text was cut (undefined: not yet known).
   */
  const inContent = (ts: ScoredToken[] | null, end?: number): ScoredToken[] | null =>
    ts && job.trimStart ? ts.filter((t) => t.offset + t.text.length > lead && (end === undefined || t.offset < end)) : ts;
  // Chat, streamed: a token goes out with the chunk that shows its text (one whose text is still held
  // back, a possible stop string, waits), so that the stop string's tokens never go out.
  let shown = 0, pending: ScoredToken[] = [];
  const shownTokens = (): ScoredToken[] | null => {
    if (!job.trimStart) return newTokens();
    const all = [...pending, ...(newTokens() ?? [])];
    pending = all.filter((t) => t.offset >= shown);
    return inContent(all.filter((t) => t.offset < shown));
  };
  for await (let piece of gen) {
    shown += piece.length;
    if (!started) {
      const t = piece.trimStart();
      lead += piece.length - t.length;
      piece = t;
      started = piece.length > 0;
    }
    if (stream && piece) {
      echo();
      send(job.chunk(index, piece, scorer ? shownTokens() : null));
    }
    // The CPU backend computes synchronously: give the event loop a turn between tokens so that a
    // disconnect (and other clients' requests) are seen while a generation runs.
    await yieldToEventLoop();
    if (signal.aborted) return null; // leaving the loop ends generate(), which leaves the runner idle
  }
  const r = await gen.result;
  if (!stream) {
    const text = promptText + (job.trimStart ? r.text.trimStart() : r.text);
    if (job.trimStart) lead = r.text.length - r.text.trimStart().length;
    const tokens = scorer && [...(job.echo ? promptTokens()! : []), ...inContent(newTokens(), r.text.length)!];
    return { result: r, answer: { text, finish: r.finishReason, tokens } };
  }
  echo();
  const rest = scorer && inContent([...pending, ...newTokens()!], r.text.length);
  send(job.finalChunk(index, r.finishReason, rest && rest.length ? rest : null));
  return { result: r, answer: { text: '', finish: r.finishReason, tokens: null } };
}

/**
 * OpenAI's streaming format: `data: {chunk}\n\n` events, then `data: [DONE]\n\n`. Headers go out with
 * the first event, so a generation that fails before any text still gets a plain 500.
 */
class EventStream {
  private open = false;
  constructor(private res: ServerResponse) {}

  send(data: object): void {
    if (!this.open) {
      this.open = true;
      this.res.writeHead(200, { 'Content-Type': 'text/event-stream; charset=utf-8', 'Cache-Control': 'no-cache', Connection: 'keep-alive' });
    }
    this.write(data);
  }

  done(): void {
    this.res.end('data: [DONE]\n\n');
  }

  private write(data: object): void {
    if (!this.res.destroyed) this.res.write(`data: ${JSON.stringify(data)}\n\n`);
  }
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The request body parsed as JSON (whatever its Content-Type: `curl -d` sends form encoding by
 * default). Past `limit` bytes the rest is read and dropped rather than the socket cut, so the client
 * still receives its 413.
 */
function readJson(req: IncomingMessage, limit: number): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const tooLarge = () => new ApiError(413, `request body is larger than the limit of ${limit} bytes`);
    if (Number(req.headers['content-length']) > limit) {
      req.resume();
      reject(tooLarge());
      return;
    }
    const chunks: Buffer[] = [];
    let size = 0, over = false;
    req.on('data', (c: Buffer) => {
      if (over) return;
      size += c.length;
      if (size > limit) {
        over = true;
        chunks.length = 0;
        reject(tooLarge());
      } else chunks.push(c);
    });
    req.on('error', reject);
    req.on('close', () => { if (!req.complete) reject(new Error('the client closed the connection')); });
    req.on('end', () => {
      if (over) return;
      const text = Buffer.concat(chunks).toString('utf8');
      if (text.trim() === '') return reject(new ApiError(400, 'request body is empty: send a JSON object'));
      try {
        resolve(JSON.parse(text));
      } catch (e) {
        reject(new ApiError(400, `request body is not valid JSON: ${oneLine(e)}`));
      }
    });
  });
}
