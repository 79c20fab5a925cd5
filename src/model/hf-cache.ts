/**
 * Finds a Hugging Face hub id (`facebook/opt-125m`, `facebook/opt-125m@<branch, tag or commit>`) in the
 * local Hugging Face hub cache, so that `--model` and `loadModel(path)` take the models that
 * transformers or `hf download` (`huggingface-cli download`) already fetched. Nothing is downloaded: only the cache on
 * disk is read, in the hub's layout:
 *
 *   <cache>/models--<owner>--<name>/refs/<branch or tag>    the commit hash, as text
 *   <cache>/models--<owner>--<name>/snapshots/<hash>/       the checkpoint folder (symlinks into ../../blobs/)
 *
 * with <cache> found as huggingface_hub finds it (hubCacheDir). Node only: NodeFileSource calls it, and
 * a browser never loads either.
 */
import { existsSync } from 'node:fs';
import { readdir, readFile, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import { fail } from '../util/errors.js';

/** An owner or repository name: ASCII letters, digits, `_`, `-`, `.`; starting and ending with a letter, digit or `_`; no `--` or `..` (huggingface_hub's rules). */
const NAME = /^[A-Za-z0-9_](?:[A-Za-z0-9_.-]*[A-Za-z0-9_])?$/;
/** A revision: a branch, tag or commit hash, its `/`-separated parts each starting with a letter, digit or `_` (so never `.` or `..`). */
const REVISION = /^[A-Za-z0-9_][A-Za-z0-9_.-]*(?:\/[A-Za-z0-9_][A-Za-z0-9_.-]*)*$/;

export interface HubId {
  /** `owner/name`. */
  repo: string;
  /** What followed `@`, if anything. */
  revision?: string;
}

/** `owner/name` or `owner/name@revision` as a hub id; null for anything else (a path such as `./x/y` or `/a/b`). */
export function parseHubId(arg: string): HubId | null {
  const at = arg.indexOf('@');
  const repo = at < 0 ? arg : arg.slice(0, at);
  const revision = at < 0 ? undefined : arg.slice(at + 1);
  const parts = repo.split('/');
  if (parts.length !== 2 || !parts.every((p) => NAME.test(p) && !p.includes('--') && !p.includes('..'))) return null;
  if (revision !== undefined && !REVISION.test(revision)) return null;
  return { repo, revision };
}

/** `~` and `~/...` as the home folder, as huggingface_hub expands its variables. */
function expandHome(p: string): string {
  return p === '~' ? homedir() : p.startsWith('~/') ? join(homedir(), p.slice(2)) : p;
}

/**
 * The hub cache folder, as huggingface_hub picks it: $HF_HUB_CACHE (or its older name
 * $HUGGINGFACE_HUB_CACHE), else $HF_HOME/hub, else $XDG_CACHE_HOME/huggingface/hub, else
 * ~/.cache/huggingface/hub. Empty variables count as unset.
 */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  const v = (name: string) => (env[name] ? expandHome(env[name]!) : undefined);
  const hub = v('HF_HUB_CACHE') ?? v('HUGGINGFACE_HUB_CACHE');
  if (hub) return hub;
  const home = v('HF_HOME') ?? join(v('XDG_CACHE_HOME') ?? join(homedir(), '.cache'), 'huggingface');
  return join(home, 'hub');
}

async function isDir(p: string): Promise<boolean> {
  try { return (await stat(p)).isDirectory(); } catch { return false; }
}

async function readRef(p: string): Promise<string | null> {
  try { return (await readFile(p, 'utf8')).trim(); } catch { return null; }
}

/**
 * The folder `--model ARG` names: ARG itself where it exists on disk (a local folder always wins, even
 * one named like `owner/name`); else, for a hub id, its snapshot folder in the local cache (refs/<revision,
 * default main> names the commit; a revision may also be a commit hash naming a snapshot; without
 * refs/main a lone snapshot is taken). Fails with one line where neither is found.
 */
export async function resolveModelDir(arg: string): Promise<string> {
  try { await stat(arg); return arg; } catch { /* not on disk: a hub id? */ }
  const id = parseHubId(arg);
  if (!id) fail(`model folder not found: ${arg}`);
  const cache = hubCacheDir();
  const [owner, name] = id.repo.split('/');
  const repoDir = join(cache, `models--${owner}--${name}`);
  if (!(await isDir(repoDir))) {
    // `hf` is huggingface_hub's CLI since 0.34; older ones call it huggingface-cli.
    const download = `hf download ${id.repo}${id.revision ? ` --revision ${id.revision}` : ''}`;
    fail(`model folder not found: ${arg} (not a folder, nor in the Hugging Face cache at ${cache}; download it with \`${download}\` (older huggingface_hub: huggingface-cli), or pass a folder)`);
  }
  const inCache = `${arg} is in the Hugging Face cache at ${cache} but`;
  const revision = id.revision ?? 'main';
  const hash = await readRef(join(repoDir, 'refs', revision));
  if (hash !== null) {
    if (!NAME.test(hash)) fail(`${inCache} its ref "${revision}" holds no commit hash`);
    const snap = join(repoDir, 'snapshots', hash);
    if (!(await isDir(snap))) fail(`${inCache} its ref "${revision}" names snapshot ${hash}, which is missing`);
    return snap;
  }
  if (id.revision !== undefined) {
    const snap = join(repoDir, 'snapshots', id.revision);
    if (id.revision.includes('/') || !(await isDir(snap))) fail(`${inCache} has no ref or snapshot "${id.revision}"`);
    return snap;
  }
  // No refs/main (a download of a commit or of another branch only): a lone snapshot is unambiguous.
  let snaps: string[] = [];
  try {
    const entries = await readdir(join(repoDir, 'snapshots'), { withFileTypes: true });
    snaps = entries.filter((e) => e.isDirectory()).map((e) => e.name).sort();
  } catch { /* no snapshots folder */ }
  if (snaps.length === 1) return join(repoDir, 'snapshots', snaps[0]);
  if (snaps.length === 0) fail(`${inCache} has no ref "main" and no snapshot`);
  fail(`${inCache} has no ref "main" and ${snaps.length} snapshots (${snaps.join(', ')}): name one as ${id.repo}@<revision>`);
}

/**
 * The name a command shows for `--model ARG` once the model has loaded: the hub id as given where ARG was
 * found in the Hugging Face cache (not the snapshot's hash folder), else the folder's own name.
 */
export function modelLabel(arg: string): string {
  return !existsSync(arg) && parseHubId(arg) ? arg : basename(resolve(arg));
}
