/**
 * Progress reporting without tying the library to a terminal: eval functions call an optional
 * `onProgress(done, total)`; the CLI passes one that drives a cli-progress bar on stderr (stdout stays
 * clean for --json).
 */
import cliProgress from 'cli-progress';

export type ProgressFn = (done: number, total: number) => void;

export interface ProgressBar {
  update: ProgressFn;
  stop(): void;
}

/** A bar on stderr labelled with `label` and `unit` (e.g. "tokens", "items"). */
export function progressBar(label: string, unit: string): ProgressBar {
  const bar = new cliProgress.SingleBar({
    stream: process.stderr,
    format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {duration_formatted} elapsed, eta {eta_formatted}`,
    hideCursor: true,
    etaBuffer: 50,
  }, cliProgress.Presets.shades_classic);
  let started = false;
  return {
    update(done, total) {
      if (!started) { bar.start(total, 0); started = true; }
      bar.setTotal(total);
      bar.update(done);
    },
    stop() { if (started) bar.stop(); },
  };
}
