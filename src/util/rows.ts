/**
 * Row-major matrices side by side and apart: attn_io predictors (policy.ts) read two (rows, d)
 * activations as one (rows, 2d) input, and the WebGPU runner splits their A (r, 2d) back into halves.
 */

/** The rows of a (rows, da) and b (rows, db) side by side: (rows, da + db). */
export function sideBySide(a: Float32Array, b: Float32Array, rows: number, da: number, db = da): Float32Array {
  const n = da + db, out = new Float32Array(rows * n);
  for (let t = 0; t < rows; t++) {
    out.set(a.subarray(t * da, (t + 1) * da), t * n);
    out.set(b.subarray(t * db, (t + 1) * db), t * n + da);
  }
  return out;
}

/** Columns [c0, c0 + n) of a row-major (rows, cols) array, as (rows, n). */
export function columns(a: Float32Array, rows: number, cols: number, c0: number, n: number): Float32Array {
  const out = new Float32Array(rows * n);
  for (let i = 0; i < rows; i++) out.set(a.subarray(i * cols + c0, i * cols + c0 + n), i * n);
  return out;
}
