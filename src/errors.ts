/**
 * An error caused by the user's input (a file, a flag, an image). The CLI prints its message as
 * one line and exits non-zero; anything else is a bug and keeps its stack trace under --verbose.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

/** The first line of an error's message, without tfjs' trailing detail. */
export function firstLine(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  return message.split('\n')[0].trim();
}
