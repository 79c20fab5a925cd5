"""Makes a random opt-1.3b-shaped checkpoint (fp16, on the GPU) saved both ways: OUT/st (save_pretrained,
model.safetensors) and OUT/bin (torch.save shards of ~1 GB + pytorch_model.bin.index.json, as transformers
4.x wrote them), each with the demo tokenizer. Then bench/bin_vs_safetensors.mjs OUT loads both and compares.
On the GPU host: source .gpu-bundle/enter.sh; python3 bench/bin_vs_safetensors.py /tmp/bb && node bench/bin_vs_safetensors.mjs /tmp/bb
"""
import torch, os, json, sys, shutil, time
from transformers import OPTConfig, OPTForCausalLM
out = sys.argv[1]
cfg = OPTConfig(vocab_size=50272, hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32,
                max_position_embeddings=2048, word_embed_proj_dim=2048, do_layer_norm_before=True,
                pad_token_id=1, bos_token_id=2, eos_token_id=2)
torch.manual_seed(0)
t = time.time()
with torch.device('cuda'):
    model = OPTForCausalLM(cfg).half().eval()
st = os.path.join(out, 'st'); model.save_pretrained(st, safe_serialization=True)
b = os.path.join(out, 'bin'); os.makedirs(b, exist_ok=True); shutil.copy(os.path.join(st, 'config.json'), b)
sd = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items() if k != 'lm_head.weight'}
keys = list(sd); shards, cur, size, wm = [], [], 0, {}
for k in keys:
    cur.append(k); size += sd[k].numel() * 2
    if size > 1_000_000_000: shards.append(cur); cur, size = [], 0
if cur: shards.append(cur)
for i, ks in enumerate(shards):
    f = f'pytorch_model-{i + 1:05d}-of-{len(shards):05d}.bin'
    torch.save({k: sd[k] for k in ks}, os.path.join(b, f)); wm.update({k: f for k in ks})
json.dump({'metadata': {'total_size': sum(v.numel() * 2 for v in sd.values())}, 'weight_map': wm}, open(os.path.join(b, 'pytorch_model.bin.index.json'), 'w'))
for d in (st, b):
    for f in ('tokenizer.json', 'tokenizer_config.json'): shutil.copy(os.path.join('models/opt-gutenberg-5m', f), d)
print('made in', round(time.time() - t, 1), 's:', sorted(os.listdir(st)), sorted(os.listdir(b)))
