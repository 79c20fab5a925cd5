/**
 * The one error type users see. Its message is a single line that names the problem (the CLI prints
 * `dejavu: <message>` and exits non-zero, no stack trace). Anything else that escapes is a bug.
 */
export class DejavuError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DejavuError';
  }
}

export function fail(message: string): never {
  throw new DejavuError(message);
}
