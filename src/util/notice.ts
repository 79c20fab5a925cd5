/** One line for the user, outside the output: stderr in Node, console.warn in a browser (no `process` there). */
export function notice(line: string): void {
  if (typeof process !== 'undefined' && process.stderr) process.stderr.write(line + '\n');
  else console.warn(line);
}
