/**
 * Causal attention for T queries at positions [pos, pos + T) over the KV cache (f32, (maxPos, d)).
 * One workgroup per (head, query): scores for all visible keys in workgroup memory, softmax, then
 * o = Σ p_j v_j. Also writes each head's output L2 norm (the head_norm trace point; one float).
 * q is read from the fused qkv buffer (T, 3d). pos comes from step[0]. CPU twin: `attention`.
 */
export const ATT_WG = 64;
export const ATT_PARAMS = ['d', 'H', 'hd', 'scaleBits'] as const;

export const attentionKey = (maxPos: number, hd: number) => `attention_wg${ATT_WG}_p${maxPos}_hd${hd}`;

export function attentionWgsl(maxPos: number, hd: number): string {
  return `
struct P { d: u32, H: u32, hd: u32, scaleBits: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read> step: array<u32>;
@group(0) @binding(2) var<storage, read> qkv: array<f32>;
@group(0) @binding(3) var<storage, read> kc: array<f32>;
@group(0) @binding(4) var<storage, read> vc: array<f32>;
@group(0) @binding(5) var<storage, read_write> o: array<f32>;
@group(0) @binding(6) var<storage, read_write> hn: array<f32>;
var<workgroup> sc: array<f32, ${maxPos}>;
var<workgroup> qs: array<f32, ${hd}>;
var<workgroup> red: array<f32, ${ATT_WG}>;
fn reduce(v: f32, lid: u32, isMax: bool) -> f32 {
  red[lid] = v;
  workgroupBarrier();
  for (var st = ${ATT_WG / 2}u; st > 0u; st >>= 1u) {
    if (lid < st) { red[lid] = select(red[lid] + red[lid + st], max(red[lid], red[lid + st]), isMax); }
    workgroupBarrier();
  }
  let s = red[0];
  workgroupBarrier();
  return s;
}
@compute @workgroup_size(${ATT_WG})
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
  let h = wid.x;
  let t = wid.y;
  let n = step[0] + t + 1u;
  let hb = h * p.hd;
  for (var i = lid; i < p.hd; i += ${ATT_WG}u) { qs[i] = qkv[t * 3u * p.d + hb + i]; }
  workgroupBarrier();
  let scale = bitcast<f32>(p.scaleBits);
  var m = -3.0e38;
  for (var j = lid; j < n; j += ${ATT_WG}u) {
    var s = 0.0;
    let kb = j * p.d + hb;
    for (var i = 0u; i < p.hd; i++) { s += qs[i] * kc[kb + i]; }
    s *= scale;
    sc[j] = s;
    m = max(m, s);
  }
  m = reduce(m, lid, true);
  var sum = 0.0;
  for (var j = lid; j < n; j += ${ATT_WG}u) { let e = exp(sc[j] - m); sc[j] = e; sum += e; }
  sum = reduce(sum, lid, false);
  var nrm = 0.0;
  for (var i = lid; i < p.hd; i += ${ATT_WG}u) {
    var a = 0.0;
    for (var j = 0u; j < n; j++) { a += sc[j] * vc[j * p.d + hb + i]; }
    a /= sum;
    o[t * p.d + hb + i] = a;
    nrm += a * a;
  }
  nrm = reduce(nrm, lid, false);
  if (lid == 0u) { hn[t * p.H + h] = sqrt(nrm); }
}
`;
}
