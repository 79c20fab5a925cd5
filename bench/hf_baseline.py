#!/usr/bin/env python3
"""Hugging Face baseline for `dejavu bench --compare-hf`: stock OPTForCausalLM, batch 1, fp16, CUDA.

An OPT of a published shape with random fp16 weights (built on the GPU: no download, no host copy),
or a real checkpoint folder; a random prompt of --prompt-len ids; then a greedy decode loop of --gen
steps with past_key_values, timed with torch.cuda.synchronize around the loop. Prints one JSON line:
{shape, ms_per_token, prefill_ms, device, torch, transformers, ...}; when torch, transformers or CUDA
is missing it prints {"error": "skipped: ..."} and exits 3, so the caller can skip the comparison.

The shape table must match src/bench/shapes.ts (test/bench-shapes.test.ts compares --print-config).
"""
import argparse
import inspect
import json
import sys
import time

# name: (layers, hidden, heads, ffn), as in facebook/opt-* config.json
SHAPES = {
    "opt-125m": (12, 768, 12, 3072),
    "opt-350m": (24, 1024, 16, 4096),
    "opt-1.3b": (24, 2048, 32, 8192),
    "opt-2.7b": (32, 2560, 32, 10240),
    "opt-6.7b": (32, 4096, 32, 16384),
    "opt-13b": (40, 5120, 40, 20480),
    "opt-30b": (48, 7168, 56, 28672),
    "opt-66b": (64, 9216, 72, 36864),
}


def shape_config(name):
    """OPTConfig keyword arguments of a shape (HF config.json names)."""
    layers, hidden, heads, ffn = SHAPES[name]
    is_350m = name == "opt-350m"  # the one OPT with 512-wide embeddings and post-LayerNorm
    return {
        "vocab_size": 50272,
        "max_position_embeddings": 2048,
        "num_hidden_layers": layers,
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "ffn_dim": ffn,
        "word_embed_proj_dim": 512 if is_350m else hidden,
        "do_layer_norm_before": not is_350m,
        "enable_bias": True,
        "tie_word_embeddings": True,
        "activation_function": "relu",
        "bos_token_id": 2,
        "eos_token_id": 2,
        "pad_token_id": 1,
    }


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    src = p.add_mutually_exclusive_group()
    src.add_argument("--shape", choices=list(SHAPES), help="published OPT shape, random fp16 weights")
    src.add_argument("--model", help="Hugging Face OPT checkpoint folder")
    p.add_argument("--prompt-len", type=int, default=128)
    p.add_argument("--gen", type=int, default=128)
    p.add_argument("--warmup", type=int, default=3, help="decode steps of the untimed warm-up round")
    p.add_argument("--attn", choices=["eager", "sdpa"], default=None,
                   help="attention implementation (default: the library's choice)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--print-config", action="store_true",
                   help="print the OPTConfig arguments of --shape (default: of every shape) as JSON and exit; needs no torch")
    a = p.parse_args(argv)
    if a.prompt_len < 1 or a.gen < 1 or a.warmup < 0:
        p.error("--prompt-len and --gen must be >= 1, --warmup >= 0")
    if not (a.shape or a.model or a.print_config):
        p.error("one of --shape or --model is required")
    return a


def skip(reason):
    print(json.dumps({"error": "skipped: " + reason}))
    return 3


def build_model(args, torch, OPTConfig, OPTForCausalLM):
    if args.model:
        # torch_dtype is the long-standing keyword (newer versions also take dtype= and warn).
        model = OPTForCausalLM.from_pretrained(args.model, torch_dtype=torch.float16)
        return model.to(device="cuda", dtype=torch.float16)
    kw = shape_config(args.shape)
    if args.attn:
        kw["attn_implementation"] = args.attn
    config = OPTConfig(**kw)
    # Parameters are created on the GPU directly in fp16 (66B in fp32 on the host would be 264 GB);
    # the library's own init (normal, std 0.02) then runs there too, which takes seconds.
    prev = torch.get_default_dtype()
    torch.set_default_dtype(torch.float16)
    try:
        with torch.device("cuda"):
            model = OPTForCausalLM(config)
    finally:
        torch.set_default_dtype(prev)
    return model.to(device="cuda", dtype=torch.float16)


def main(argv=None):
    args = parse_args(argv)
    if args.print_config:
        names = [args.shape] if args.shape else list(SHAPES)
        print(json.dumps({n: shape_config(n) for n in names}))
        return 0
    try:
        import torch
        import transformers
        from transformers import OPTConfig, OPTForCausalLM
    except ImportError as e:
        return skip(f"no torch/transformers for {sys.executable} ({e})")
    if not torch.cuda.is_available():
        return skip("torch has no CUDA device")

    torch.manual_seed(args.seed)
    model = build_model(args, torch, OPTConfig, OPTForCausalLM).eval()
    cfg = model.config
    P, G = args.prompt_len, args.gen
    if P + G > cfg.max_position_embeddings:
        print(json.dumps({"error": f"--prompt-len + --gen exceeds the context of {cfg.max_position_embeddings}"}))
        return 2

    # Prefill needs only the last position's logits; ask for that where the version supports it
    # (logits_to_keep from 4.50, num_logits_to_keep from 4.45), as dejavu computes one row too.
    params = inspect.signature(model.forward).parameters
    last_only = {}
    if "logits_to_keep" in params:
        last_only = {"logits_to_keep": 1}
    elif "num_logits_to_keep" in params:
        last_only = {"num_logits_to_keep": 1}

    ids = torch.randint(0, cfg.vocab_size, (1, P), device="cuda")
    # An explicit all-ones mask of the full length: OPT derives positions from it (cumsum) in every
    # version, so a decode step at position p embeds position p.
    mask = torch.ones(1, P + G, dtype=torch.long, device="cuda")

    def run(n):
        """Prefill + n greedy decode steps; returns (prefill ms, mean decode ms per token)."""
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = model(input_ids=ids, attention_mask=mask[:, :P], use_cache=True, **last_only)
        past = out.past_key_values
        nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        torch.cuda.synchronize()
        t1 = time.perf_counter()
        for i in range(n):
            out = model(input_ids=nxt, attention_mask=mask[:, : P + i + 1], past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(dim=-1, keepdim=True)
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        return (t1 - t0) * 1e3, (t2 - t1) * 1e3 / max(n, 1)

    with torch.inference_mode():
        run(min(args.warmup, G))  # kernels loaded, allocator warm
        prefill_ms, ms_per_token = run(G)

    print(json.dumps({
        "shape": args.shape or args.model,
        "ms_per_token": round(ms_per_token, 4),
        "tokens_per_s": round(1e3 / ms_per_token, 2),
        "prefill_ms": round(prefill_ms, 3),
        "prompt_len": P,
        "gen": G,
        "device": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "attn_implementation": getattr(cfg, "_attn_implementation", None),
        "parameters": sum(p.numel() for p in model.parameters()),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
