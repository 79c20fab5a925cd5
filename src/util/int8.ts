// Int8 rows with a scale each: how the WebGPU backend stores predictor B (block-select.ts, I8).

/**
 * Rows of w (rows, cols) as int8 with a scale a row (the WebGPU backend's int8 predictor B: block-select.ts, I8; ops.ts uploadI8):
 * s = max |w_row|, q = round(127 · w / s); the stored row reads back as s · q / 127 (`values`).
 */
export function quantizeRowsI8(w: Float32Array, rows: number, cols: number): { q: Int8Array; scale: Float32Array; values: Float32Array } {
  const q = new Int8Array(rows * cols), scale = new Float32Array(rows), values = new Float32Array(rows * cols);
  for (let r = 0; r < rows; r++) {
    let m = 0;
    for (let c = 0; c < cols; c++) m = Math.max(m, Math.abs(w[r * cols + c]));
    scale[r] = m;
    if (m === 0) continue;
    for (let c = 0; c < cols; c++) {
      const v = Math.max(-127, Math.min(127, Math.round((127 * w[r * cols + c]) / m)));
      q[r * cols + c] = v;
      values[r * cols + c] = Math.fround(Math.fround(q[r * cols + c] / 127) * scale[r]);   // (the stored q: no −0)
    }
  }
  return { q, scale, values };
}
