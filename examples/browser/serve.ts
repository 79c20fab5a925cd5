/**
 * A tiny static file server for the browser example: it serves the repository root, so the page
 * (examples/browser/index.html), the compiled library (dist/), node_modules (the import map's
 * targets) and the demo model (models/) all come from one origin.
 *
 * FetchFileSource reads checkpoints with HEAD (for sizes) and single-range GETs (for tensors), so
 * both are answered here; a server that ignores Range would still work, only slower (whole files).
 *
 *   node dist/examples/browser/serve.js [port]   (default 8080; 0 picks a free one)
 */
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { dirname, extname, join, resolve, sep } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

/** The repository root, from dist/examples/browser/. */
export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

// Module scripts must come with a JavaScript MIME type, or the browser refuses them; .wasm needs
// application/wasm for WebAssembly.instantiateStreaming.
const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.json': 'application/json; charset=utf-8',
  '.map': 'application/json; charset=utf-8',
  '.wasm': 'application/wasm',
  '.safetensors': 'application/octet-stream',
  '.css': 'text/css; charset=utf-8',
  '.ts': 'text/plain; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
  '.svg': 'image/svg+xml',
};

export interface StaticServer {
  server: Server;
  /** http://127.0.0.1:PORT (127.0.0.1 is a secure context, which navigator.gpu requires). */
  url: string;
  close(): Promise<void>;
}

/**
 * A single "bytes=a-b" / "bytes=a-" / "bytes=-n" range. null: no Range, or one this server does not
 * parse (several ranges), which HTTP lets a server answer with the whole file; 'bad': unsatisfiable.
 */
function byteRange(header: string | undefined, size: number): { start: number; end: number } | null | 'bad' {
  if (!header) return null;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return null;
  let start: number, end: number;
  if (m[1] === '') { start = Math.max(0, size - Number(m[2])); end = size - 1; }
  else { start = Number(m[1]); end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1); }
  return start <= end && start < size ? { start, end } : 'bad';
}

/** Serves `root` on 127.0.0.1:`port` (0: a free port). */
export async function serveStatic(root: string = REPO_ROOT, port = 8080): Promise<StaticServer> {
  const base = resolve(root);
  const server = createServer(async (req, res) => {
    const fail = (code: number, msg: string) => { res.writeHead(code, { 'content-type': 'text/plain; charset=utf-8' }); res.end(msg + '\n'); };
    if (req.method !== 'GET' && req.method !== 'HEAD') return fail(405, 'method not allowed');
    let path: string;
    try { path = decodeURIComponent(new URL(req.url ?? '/', 'http://x').pathname); } catch { return fail(400, 'bad path'); }
    if (path.endsWith('/')) path += 'index.html';
    const file = join(base, path);
    if (file !== base && !file.startsWith(base + sep)) return fail(403, 'outside the served folder');
    let size: number;
    try {
      const s = await stat(file);
      if (!s.isFile()) return fail(404, `not found: ${path}`);
      size = s.size;
    } catch { return fail(404, `not found: ${path}`); }
    const headers: Record<string, string | number> = {
      'content-type': MIME[extname(file)] ?? 'application/octet-stream',
      'accept-ranges': 'bytes',
      'cache-control': 'no-store', // a rebuilt dist/ is picked up on reload
    };
    const range = byteRange(req.headers.range, size);
    if (range === 'bad') { res.writeHead(416, { 'content-range': `bytes */${size}` }); return res.end(); }
    const { start, end } = range ?? { start: 0, end: size - 1 };
    headers['content-length'] = size === 0 ? 0 : end - start + 1;
    if (range) headers['content-range'] = `bytes ${start}-${end}/${size}`;
    res.writeHead(range ? 206 : 200, headers);
    if (req.method === 'HEAD' || size === 0) return res.end();
    createReadStream(file, { start, end }).on('error', () => res.destroy()).pipe(res);
  });
  await new Promise<void>((ok, err) => { server.once('error', err); server.listen(port, '127.0.0.1', ok); });
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    server, url,
    close: () => new Promise<void>((ok) => { server.closeAllConnections(); server.close(() => ok()); }),
  };
}

// Run directly: serve the repository and print the example's address.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const port = process.argv[2] === undefined ? 8080 : Number(process.argv[2]);
  if (!(Number.isInteger(port) && port >= 0 && port < 65536)) {
    process.stderr.write(`serve: port must be an integer in [0, 65535], got ${process.argv[2]}\n`);
    process.exit(1);
  }
  serveStatic(REPO_ROOT, port).then(
    (s) => process.stdout.write(`serving ${REPO_ROOT}\nopen ${s.url}/examples/browser/ (run \`npm run build\` first)\n`),
    (e: Error) => { process.stderr.write(`serve: ${e.message.split('\n')[0]}\n`); process.exit(1); },
  );
}
