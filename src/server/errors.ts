/**
 * Errors the HTTP API answers with, in OpenAI's shape:
 * `{"error": {"message", "type", "param", "code"}}`. Clients (the openai packages among them) read
 * `message` and the status; `param` names the request field at fault where there is one.
 */
export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    readonly param: string | null = null,
    readonly code: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: string | null };
}

/** OpenAI's types: the client's fault is 'invalid_request_error', ours 'server_error'. */
export function errorBody(status: number, message: string, param: string | null = null, code: string | null = null): ErrorBody {
  return { error: { message, type: status >= 500 ? 'server_error' : 'invalid_request_error', param, code } };
}

/** A thrown value as one line: the message's first line, never a stack. */
export function oneLine(e: unknown): string {
  const m = e instanceof Error ? e.message : String(e);
  return m.split('\n')[0] || 'unknown error';
}
