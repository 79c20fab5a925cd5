import type { ActivitySample, SparsityAnalysis } from './analyze.js';

/**
 * A one-page SVG of a sparsity analysis, hand-written (no dependency):
 *  - top: per-layer bars of the mean fraction of MLP neurons that are zero after ReLU, with p10–p90
 *    whiskers over tokens, and a marker for the neurons that carry 90% of the MLP output norm;
 *  - bottom: a token × neuron heatmap of fc1 activations for one layer (white = inactive).
 */

export interface PlotMeta {
  title: string;
  subtitle?: string;
}

const FONT = 'font-family="Helvetica, Arial, sans-serif"';
/** Sequential ramp for active neurons (light to dark blue); inactive is white. */
const RAMP = ['#c6dbef', '#9ecae1', '#6baed6', '#3182bd', '#08519c', '#08306b'];
const BAR = '#4a7ab5';
const N90 = '#e6550d';

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}
const r1 = (x: number) => Math.round(x * 10) / 10;
const pct = (x: number) => `${Math.round(x * 100)}%`;

function text(x: number, y: number, s: string, attrs = ''): string {
  return `<text x="${r1(x)}" y="${r1(y)}" ${attrs}>${esc(s)}</text>`;
}

export function renderSparsitySvg(a: SparsityAnalysis, meta: PlotMeta): string {
  const W = 920;
  const out: string[] = [];
  let y = 0;

  // Title
  out.push(text(W / 2, 30, meta.title, 'font-size="19" font-weight="bold" text-anchor="middle"'));
  if (meta.subtitle) out.push(text(W / 2, 52, meta.subtitle, 'font-size="13" fill="#555" text-anchor="middle"'));
  y = 80;

  // Panel A: per-layer zero fraction bars.
  const A = { x: 80, y: y + 28, w: 600, h: 200 };
  out.push(text(A.x - 60, y + 10, 'A. MLP neurons that are zero after ReLU, per layer', 'font-size="15" font-weight="bold"'));
  const L = a.layers.length;
  const ys = (v: number) => A.y + A.h * (1 - v);
  for (let t = 0; t <= 10; t += 2) {
    const v = t / 10, yy = ys(v);
    out.push(`<line x1="${A.x}" y1="${r1(yy)}" x2="${A.x + A.w}" y2="${r1(yy)}" stroke="${t ? '#e4e4e4' : '#333'}"/>`);
    out.push(text(A.x - 8, yy + 4, pct(v), 'font-size="11" text-anchor="end"'));
  }
  out.push(`<line x1="${A.x}" y1="${A.y}" x2="${A.x}" y2="${A.y + A.h}" stroke="#333"/>`);
  out.push(text(A.x - 52, A.y + A.h / 2, 'share of neurons', `font-size="12" text-anchor="middle" transform="rotate(-90 ${A.x - 52} ${A.y + A.h / 2})"`));
  const slot = A.w / L, bw = Math.min(48, slot * 0.6);
  for (const l of a.layers) {
    const cx = A.x + slot * (l.layer + 0.5);
    const z = l.mlp_zero_fraction;
    out.push(`<rect class="bar" data-layer="${l.layer}" x="${r1(cx - bw / 2)}" y="${r1(ys(z.mean))}" width="${r1(bw)}" height="${r1(A.h * z.mean)}" fill="${BAR}">` +
      `<title>layer ${l.layer}: mean ${pct(z.mean)} zero (std ${(z.std * 100).toFixed(1)} pts, p10 ${pct(z.p10)}, p90 ${pct(z.p90)})</title></rect>`);
    // Whisker: p10–p90 over tokens.
    const cap = bw * 0.25;
    out.push(`<path d="M${r1(cx)} ${r1(ys(z.p10))}V${r1(ys(z.p90))}M${r1(cx - cap)} ${r1(ys(z.p10))}h${r1(2 * cap)}M${r1(cx - cap)} ${r1(ys(z.p90))}h${r1(2 * cap)}" stroke="#111" stroke-width="1.5" fill="none"/>`);
    // Marker: share of neurons NOT needed for 90% of the output norm (1 − n90/f), comparable to the bar.
    const n90 = 1 - l.mlp_neurons_for_output_norm.at_90 / l.ffn;
    out.push(`<path d="M${r1(cx - bw / 2 - 3)} ${r1(ys(n90))}h${r1(bw + 6)}" stroke="${N90}" stroke-width="3"/>`);
    out.push(text(cx, A.y + A.h + 16, String(l.layer), 'font-size="12" text-anchor="middle"'));
    out.push(text(cx, Math.min(ys(z.p90), ys(n90)) - 6, pct(z.mean), 'font-size="11" text-anchor="middle" fill="#222"'));
  }
  out.push(text(A.x + A.w / 2, A.y + A.h + 34, 'layer', 'font-size="12" text-anchor="middle"'));

  // Legend A
  const lx = A.x + A.w + 24;
  let ly = A.y + 10;
  out.push(`<rect x="${lx}" y="${ly - 10}" width="16" height="12" fill="${BAR}"/>`);
  out.push(text(lx + 24, ly, 'zero after ReLU, mean', 'font-size="12"'));
  out.push(text(lx + 24, ly + 15, 'over tokens', 'font-size="12"'));
  ly += 38;
  out.push(`<path d="M${lx + 8} ${ly - 12}V${ly + 4}M${lx + 4} ${ly - 12}h8M${lx + 4} ${ly + 4}h8" stroke="#111" stroke-width="1.5"/>`);
  out.push(text(lx + 24, ly, 'p10–p90 over tokens', 'font-size="12"'));
  ly += 30;
  out.push(`<path d="M${lx} ${ly - 4}h16" stroke="${N90}" stroke-width="3"/>`);
  out.push(text(lx + 24, ly, 'neurons not needed for', 'font-size="12"'));
  out.push(text(lx + 24, ly + 15, '90% of MLP output norm', 'font-size="12"'));
  out.push(text(lx + 24, ly + 30, '(1 − n90 / ffn)', 'font-size="12"'));
  y = A.y + A.h + 60;

  // Panel B: heatmap.
  if (a.sample) y = heatmap(out, a.sample, y, a.layers[a.sample.layer]?.ffn ?? 0);

  const H = Math.ceil(y + 10);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" ${FONT}>\n` +
    `<rect width="${W}" height="${H}" fill="#fff"/>\n${out.join('\n')}\n</svg>\n`;
}

function heatmap(out: string[], s: ActivitySample, y0: number, ffn: number): number {
  const cw = Math.max(1, Math.min(4, Math.floor(560 / s.tokens))), ch = s.neurons.length > 200 ? 1.5 : 3;
  const B = { x: 80, y: y0 + 34, w: s.tokens * cw, h: s.neurons.length * ch };
  out.push(text(20, y0 + 10, `B. Which neurons fire on which token: layer ${s.layer} MLP after ReLU (white = zero)`, 'font-size="15" font-weight="bold"'));

  // Colour scale: up to the 99th percentile of the nonzero sampled activations.
  const nz: number[] = [];
  for (const row of s.values) for (const v of row) if (v > 0) nz.push(v);
  nz.sort((p, q) => p - q);
  const vmax = nz.length ? nz[Math.min(nz.length - 1, Math.floor(nz.length * 0.99))] : 1;
  const level = (v: number) => (v <= 0 ? -1 : Math.min(RAMP.length - 1, Math.floor((v / vmax) * RAMP.length)));

  // One path per colour level; horizontal runs of equal level become one rectangle (in cell units).
  const paths: string[][] = RAMP.map(() => []);
  s.values.forEach((row, i) => {
    let t = 0;
    while (t < row.length) {
      const k = level(row[t]);
      let e = t + 1;
      while (e < row.length && level(row[e]) === k) e++;
      if (k >= 0) paths[k].push(`M${t} ${i}h${e - t}v1h${t - e}z`);
      t = e;
    }
  });
  out.push(`<rect x="${B.x}" y="${B.y}" width="${B.w}" height="${r1(B.h)}" fill="#fff" stroke="#333"/>`);
  out.push(`<g transform="translate(${B.x} ${B.y}) scale(${cw} ${ch})" shape-rendering="crispEdges">`);
  paths.forEach((p, k) => { if (p.length) out.push(`<path fill="${RAMP[k]}" d="${p.join('')}"/>`); });
  out.push('</g>');

  // Axes
  const step = s.tokens >= 100 ? 16 : 8;
  for (let t = 0; t <= s.tokens; t += step) {
    const x = B.x + t * cw;
    out.push(`<path d="M${x} ${r1(B.y + B.h)}v4" stroke="#333"/>`);
    out.push(text(x, B.y + B.h + 16, String(s.firstToken + t), 'font-size="11" text-anchor="middle"'));
  }
  out.push(text(B.x + B.w / 2, B.y + B.h + 34, `token position in the text (${s.tokens} consecutive tokens)`, 'font-size="12" text-anchor="middle"'));
  const n = s.neurons.length;
  const rowTicks = [0, Math.floor(n / 4), Math.floor(n / 2), Math.floor((3 * n) / 4), n - 1];
  for (const i of rowTicks) {
    const yy = B.y + (i + 0.5) * ch;
    out.push(`<path d="M${B.x - 4} ${r1(yy)}h4" stroke="#333"/>`);
    out.push(text(B.x - 7, yy + 4, pct(s.firingRate[i]), 'font-size="10" text-anchor="end"'));
  }
  const my = B.y + B.h / 2;
  out.push(text(B.x - 48, my, `neurons 0–${n - 1} of ${ffn}, most active first`, `font-size="12" text-anchor="middle" transform="rotate(-90 ${B.x - 48} ${r1(my)})"`));
  out.push(text(B.x - 7, B.y - 6, 'fires on', 'font-size="10" text-anchor="end" fill="#555"'));

  // Colour legend
  const lx = B.x + B.w + 40, ly = B.y + 10, sw = 14, sh = 22;
  out.push(text(lx, ly - 2, 'activation', 'font-size="12" font-weight="bold"'));
  RAMP.forEach((c, k) => {
    const yy = ly + 8 + (RAMP.length - 1 - k) * sh;
    out.push(`<rect x="${lx}" y="${yy}" width="${sw}" height="${sh}" fill="${c}"/>`);
    const lo = (k / RAMP.length) * vmax, hi = ((k + 1) / RAMP.length) * vmax;
    out.push(text(lx + sw + 6, yy + 15, k === RAMP.length - 1 ? `≥ ${lo.toFixed(2)}` : `${lo.toFixed(2)}–${hi.toFixed(2)}`, 'font-size="11"'));
  });
  const zy = ly + 8 + RAMP.length * sh + 8;
  out.push(`<rect x="${lx}" y="${zy}" width="${sw}" height="${sh}" fill="#fff" stroke="#333"/>`);
  out.push(text(lx + sw + 6, zy + 15, '0 (inactive)', 'font-size="11"'));
  out.push(text(lx, zy + sh + 24, 'Left ticks: share of all', 'font-size="11" fill="#555"'));
  out.push(text(lx, zy + sh + 38, 'analysed tokens on which', 'font-size="11" fill="#555"'));
  out.push(text(lx, zy + sh + 52, 'that neuron is nonzero.', 'font-size="11" fill="#555"'));
  return B.y + B.h + 44;
}
