/**
 * A restricted reader of Python pickles (protocols 2-5): enough of the format for the data.pkl of a
 * PyTorch checkpoint, and nothing that runs code. A pickle is a program for a stack machine whose
 * GLOBAL and REDUCE opcodes import and call arbitrary Python callables; loading an untrusted
 * pytorch_model.bin with Python's pickle can therefore run anything. Here a GLOBAL resolves only
 * through the caller's table of allowed names (anything else is an error naming it), and REDUCE calls
 * only the caller's TypeScript stand-ins for those names. Like torch.load(weights_only=True).
 *
 * Values: None → null, bool, int → number (bigint past 2^53), float → number, str → string, bytes →
 * Uint8Array, tuple and list → arrays, dict → Map.
 */
import { fail } from '../util/errors.js';

export type PyValue = null | boolean | number | bigint | string | Uint8Array | PyValue[] | Map<PyValue, PyValue> | PyObject;
/** An object only the caller's table makes: a resolved global, or what its stand-in returned. */
export interface PyObject { readonly pyType: string; readonly [k: string]: unknown }

export interface UnpickleHooks {
  /** module.name → the value a GLOBAL pushes (a PyObject the caller recognises in `call`), or undefined: not allowed. */
  global(module: string, name: string): PyObject | undefined;
  /** REDUCE: the callable (a value `global` made) applied to args; undefined: not callable. */
  call(fn: PyValue, args: PyValue[]): PyValue | undefined;
  /** BINPERSID: the persistent id (PyTorch: a storage reference) → its value. */
  persistentLoad(pid: PyValue): PyValue;
}

const MAX_LEN = 1 << 30;

/** Runs the pickle in `data` and returns its value; `what` names it in errors (e.g. "model.bin: data.pkl"). */
export function unpickle(data: Uint8Array, hooks: UnpickleHooks, what: string): PyValue {
  const dv = new DataView(data.buffer, data.byteOffset, data.byteLength);
  const bad = (msg: string): never => fail(`${what}: ${msg}`);
  let pos = 0;
  const need = (n: number) => { if (pos + n > data.length) bad(`truncated pickle (needs ${n} more bytes at byte ${pos})`); };
  const u8 = () => { need(1); return data[pos++]; };
  const u16 = () => { need(2); const v = dv.getUint16(pos, true); pos += 2; return v; };
  const u32 = () => { need(4); const v = dv.getUint32(pos, true); pos += 4; return v; };
  const i32 = () => { need(4); const v = dv.getInt32(pos, true); pos += 4; return v; };
  const u64 = () => { need(8); const v = dv.getBigUint64(pos, true); pos += 8; if (v > BigInt(MAX_LEN)) bad(`a length of ${v} bytes`); return Number(v); };
  const bytes = (n: number) => { if (n > MAX_LEN) bad(`a length of ${n} bytes`); need(n); const b = data.slice(pos, pos + n); pos += n; return b; };
  const utf8 = (n: number) => { const b = bytes(n); try { return new TextDecoder('utf-8', { fatal: true }).decode(b); } catch { return bad(`a string that is not UTF-8 at byte ${pos - n}`); } };
  const latin1 = (n: number) => { const b = bytes(n); let t = ''; for (let i = 0; i < b.length; i += 4096) t += String.fromCharCode(...b.subarray(i, i + 4096)); return t; };
  const line = () => { const end = data.indexOf(0x0a, pos); if (end < 0) bad('truncated pickle (an unterminated GLOBAL)'); const s = latin1(end - pos); pos++; return s; };

  const stack: PyValue[] = [];
  const marks: number[] = [];
  const memo = new Map<number, PyValue>();
  const pop = (): PyValue => (stack.length ? stack.pop()! : bad(`stack underflow at byte ${pos}`));
  const popMark = (): PyValue[] => { const m = marks.pop(); if (m === undefined) bad(`no MARK before byte ${pos}`); return stack.splice(m!); };
  const top = (): PyValue => (stack.length ? stack[stack.length - 1] : bad(`empty stack at byte ${pos}`));
  const asMap = (v: PyValue): Map<PyValue, PyValue> => (v instanceof Map ? v : bad(`SETITEM on a ${typeName(v)} at byte ${pos}`));
  const asList = (v: PyValue): PyValue[] => (Array.isArray(v) ? v : bad(`APPEND on a ${typeName(v)} at byte ${pos}`));
  const global = (module: string, name: string) => hooks.global(module, name) ?? bad(`refusing the Python object ${module}.${name} (only tensors, storages and dicts are read; no code runs)`);

  for (;;) {
    const at = pos, op = u8();
    switch (op) {
      case 0x80: u8(); break;                                   // PROTO
      case 0x95: u64(); break;                                  // FRAME (a length hint)
      case 0x28: marks.push(stack.length); break;               // MARK
      case 0x2e: return stack.length === 1 ? stack[0] : bad(`STOP with ${stack.length} values on the stack`);
      case 0x4e: stack.push(null); break;                       // NONE
      case 0x88: stack.push(true); break;                       // NEWTRUE
      case 0x89: stack.push(false); break;                      // NEWFALSE
      case 0x4a: stack.push(i32()); break;                      // BININT
      case 0x4b: stack.push(u8()); break;                       // BININT1
      case 0x4d: stack.push(u16()); break;                      // BININT2
      case 0x8a: case 0x8b: {                                   // LONG1, LONG4: little-endian two's complement
        const n = op === 0x8a ? u8() : u32();
        // torch writes none wider than 8 bytes; a long one is refused rather than converted.
        if (n > 256) bad(`an integer of ${n} bytes at byte ${at} (at most 256 are read)`);
        const b = bytes(n);
        let hex = '';
        for (let i = n - 1; i >= 0; i--) hex += b[i].toString(16).padStart(2, '0');
        let v = n ? BigInt('0x' + hex) : 0n;
        if (n && b[n - 1] & 0x80) v -= 1n << BigInt(8 * n);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x47: { need(8); stack.push(dv.getFloat64(pos, false)); pos += 8; break; }   // BINFLOAT (big-endian)
      case 0x58: stack.push(utf8(u32())); break;                // BINUNICODE
      case 0x8c: stack.push(utf8(u8())); break;                 // SHORT_BINUNICODE
      case 0x8d: stack.push(utf8(u64())); break;                // BINUNICODE8
      case 0x54: { const n = i32(); if (n < 0) bad('a negative string length'); stack.push(latin1(n)); break; }   // BINSTRING
      case 0x55: stack.push(latin1(u8())); break;               // SHORT_BINSTRING
      case 0x42: stack.push(bytes(u32())); break;               // BINBYTES
      case 0x43: stack.push(bytes(u8())); break;                // SHORT_BINBYTES
      case 0x8e: stack.push(bytes(u64())); break;               // BINBYTES8
      case 0x29: stack.push([]); break;                         // EMPTY_TUPLE
      case 0x5d: stack.push([]); break;                         // EMPTY_LIST
      case 0x7d: stack.push(new Map()); break;                  // EMPTY_DICT
      case 0x74: stack.push(popMark()); break;                  // TUPLE
      case 0x85: case 0x86: case 0x87: {                        // TUPLE1..3
        const n = op - 0x84;
        if (stack.length < n) bad(`stack underflow at byte ${at}`);
        stack.push(stack.splice(stack.length - n));
        break;
      }
      case 0x71: memo.set(u8(), top()); break;                  // BINPUT
      case 0x72: memo.set(u32(), top()); break;                 // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break;             // MEMOIZE
      case 0x68: case 0x6a: {                                   // BINGET, LONG_BINGET
        const i = op === 0x68 ? u8() : u32();
        if (!memo.has(i)) bad(`memo entry ${i} read before it was written (byte ${at})`);
        stack.push(memo.get(i)!);
        break;
      }
      case 0x63: { const module = line(); stack.push(global(module, line())); break; }   // GLOBAL
      case 0x93: {                                              // STACK_GLOBAL
        const name = pop(), module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') bad(`STACK_GLOBAL of non-strings at byte ${at}`);
        stack.push(global(module as string, name as string));
        break;
      }
      case 0x52: {                                              // REDUCE
        const args = pop(), fn = pop();
        if (!Array.isArray(args)) bad(`REDUCE with ${typeName(args)} arguments at byte ${at}`);
        const v = hooks.call(fn, args as PyValue[]);
        if (v === undefined) bad(`calling ${typeName(fn)} is not supported (byte ${at})`);
        stack.push(v!);
        break;
      }
      case 0x51: stack.push(hooks.persistentLoad(pop())); break;   // BINPERSID
      case 0x62: pop(); break;                                  // BUILD: an object's state (an OrderedDict's _metadata): dropped
      case 0x73: { const v = pop(), k = pop(); asMap(top()).set(k, v); break; }   // SETITEM
      case 0x75: {                                              // SETITEMS
        const kv = popMark(), m = asMap(top());
        if (kv.length % 2) bad(`SETITEMS with an odd count at byte ${at}`);
        for (let i = 0; i < kv.length; i += 2) m.set(kv[i], kv[i + 1]);
        break;
      }
      case 0x61: { const v = pop(); asList(top()).push(v); break; }   // APPEND
      case 0x65: { const vs = popMark(), l = asList(top()); for (const v of vs) l.push(v); break; }   // APPENDS
      default: bad(`unsupported pickle opcode 0x${op.toString(16).padStart(2, '0')} at byte ${at}`);
    }
  }
}

function typeName(v: PyValue): string {
  if (v === null) return 'None';
  if (Array.isArray(v)) return 'tuple';
  if (v instanceof Map) return 'dict';
  if (v instanceof Uint8Array) return 'bytes';
  if (typeof v === 'object') return (v as PyObject).pyType;
  return typeof v;
}
