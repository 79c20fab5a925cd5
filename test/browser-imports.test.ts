import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { builtinModules } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import ts from 'typescript';
import { ROOT } from './helpers.js';

/**
 * What a browser loads must not import Node's modules: a static import of node:fs anywhere in the
 * graph makes the whole entry fail to load, before any code runs. Walks the compiled JS (dist/), so it
 * checks what the browser really gets.
 */
const DIST = join(ROOT, 'dist');
/** The main entry, and the module the browser imports on demand for the WebGPU backend (backend/select.ts). */
const ENTRIES = ['src/index.js', 'src/backend/webgpu/runner.js'];

/** Specifiers of a module's static import and export-from declarations (dynamic import() is left out: it loads only when run). */
function staticImports(file: string): string[] {
  const sf = ts.createSourceFile(file, readFileSync(file, 'utf8'), ts.ScriptTarget.ES2022, false, ts.ScriptKind.JS);
  const out: string[] = [];
  for (const s of sf.statements) {
    if ((ts.isImportDeclaration(s) || ts.isExportDeclaration(s)) && s.moduleSpecifier && ts.isStringLiteral(s.moduleSpecifier)) out.push(s.moduleSpecifier.text);
  }
  return out;
}

/** Every module reachable by static imports from `entry`, with the bare (package) specifiers it meets. */
function staticGraph(entry: string): { files: Map<string, string[]>; bare: Map<string, string> } {
  const files = new Map<string, string[]>(), bare = new Map<string, string>();
  const walk = (file: string) => {
    if (files.has(file)) return;
    const specs = staticImports(file);
    files.set(file, specs);
    for (const s of specs) {
      if (s.startsWith('.') || s.startsWith('/')) walk(resolve(dirname(file), s));
      else if (!bare.has(s)) bare.set(s, relative(DIST, file));
    }
  };
  walk(join(DIST, entry));
  return { files, bare };
}

const isNodeBuiltin = (s: string) => s.startsWith('node:') || builtinModules.includes(s.split('/')[0]);

/** examples/browser/index.html's import map: bare specifier -> URL relative to the page. */
function importMap(): Record<string, string> {
  const html = readFileSync(join(ROOT, 'examples', 'browser', 'index.html'), 'utf8');
  const m = /<script type="importmap">([\s\S]*?)<\/script>/.exec(html);
  assert.ok(m, 'examples/browser/index.html has an import map');
  return JSON.parse(m[1]).imports;
}

test('no module a browser loads statically imports a Node builtin (node:fs, node:path, ...)', () => {
  for (const entry of ENTRIES) {
    const { files, bare } = staticGraph(entry);
    assert.ok(files.size > 10, `walked ${files.size} modules from ${entry}`);
    const bad = [...bare].filter(([s]) => isNodeBuiltin(s)).map(([s, from]) => `${from} imports ${s}`);
    assert.deepEqual(bad, [], `reachable from dist/${entry} by static imports`);
  }
});

test("the example's import map resolves every bare import a browser meets, to a file that exists", () => {
  const map = importMap();
  for (const entry of ENTRIES) {
    const missing = [...staticGraph(entry).bare].filter(([s]) => !(s in map)).map(([s, from]) => `${s} (from ${from})`);
    assert.deepEqual(missing, [], `bare imports reachable from dist/${entry} but not in the import map`);
  }
  for (const url of Object.values(map)) assert.ok(existsSync(resolve(ROOT, 'examples', 'browser', url)), `import map target ${url} exists`);
});

test('the walk sees through export-from and finds a Node import where there is one', () => {
  // The CLI entry reads files: the same walk must report it, or the checks above prove nothing.
  const { bare } = staticGraph('src/cli.js');
  assert.ok([...bare.keys()].some(isNodeBuiltin), 'src/cli.js reaches node: modules');
  const { files } = staticGraph('src/index.js');
  assert.ok([...files.keys()].some((f) => f.endsWith(join('sparsity', 'predictors-io.js'))), 'index.js re-exports predictors-io.js');
});
