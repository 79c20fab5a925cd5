import { test } from 'node:test';
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { serveStatic } from '../examples/browser/serve.js';
import { MODELS } from './helpers.js';

const WEIGHTS = join(MODELS['5m'], 'model.safetensors');
const rel = '/models/opt-gutenberg-5m/model.safetensors';

/** A raw GET with the path as written (fetch would normalise "/../"). */
function rawGet(url: string, path: string): Promise<number> {
  return new Promise((ok, err) => {
    const r = request(url + path, (res) => { res.resume(); ok(res.statusCode!); });
    r.on('error', err);
    r.end();
  });
}

test('the example server: MIME types, HEAD sizes and byte ranges as FetchFileSource reads them, 404s, nothing outside the root', async () => {
  const s = await serveStatic(undefined, 0);
  try {
    const size = statSync(WEIGHTS).size;
    const head = await fetch(s.url + rel, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(Number(head.headers.get('content-length')), size);
    assert.equal(head.headers.get('content-type'), 'application/octet-stream');

    const part = await fetch(s.url + rel, { headers: { Range: 'bytes=8-15' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers.get('content-range'), `bytes 8-15/${size}`);
    assert.deepEqual(new Uint8Array(await part.arrayBuffer()), new Uint8Array(readFileSync(WEIGHTS).subarray(8, 16)));
    const tail = await fetch(s.url + rel, { headers: { Range: `bytes=${size - 4}-${size + 100}` } });
    assert.equal(tail.status, 206);
    assert.equal((await tail.arrayBuffer()).byteLength, 4);
    assert.equal((await fetch(s.url + rel, { headers: { Range: `bytes=${size}-` } })).status, 416);

    const types: Record<string, RegExp> = {
      '/examples/browser/index.html': /^text\/html/,
      '/examples/browser/': /^text\/html/,
      '/dist/src/index.js': /^text\/javascript/,
      '/node_modules/@huggingface/tokenizers/dist/tokenizers.mjs': /^text\/javascript/,
      '/models/opt-gutenberg-5m/config.json': /^application\/json/,
    };
    for (const [path, type] of Object.entries(types)) {
      const r = await fetch(s.url + path);
      assert.equal(r.status, 200, path);
      assert.match(r.headers.get('content-type') ?? '', type, path);
      await r.arrayBuffer();
    }
    assert.equal((await fetch(s.url + '/models/opt-gutenberg-5m/nope.json')).status, 404);
    assert.equal(await rawGet(s.url, '/../../etc/passwd'), 404); // the URL parser clamps at the root
    assert.equal(await rawGet(s.url, '/..%2f..%2f..%2fetc/passwd'), 403); // an encoded slash is decoded after the URL parser ran
  } finally {
    await s.close();
  }
});
