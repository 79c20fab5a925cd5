"""Writes a torch.save checkpoint past 4 GiB (a 4.4 GB float32 tensor between two small ones), so its zip needs
zip64 offsets; bench/zip64_check.mjs then lists it with the engine's reader and reads the small tensor after it.
On the GPU host: python3 bench/zip64_check.py /tmp/z/big.bin && node bench/zip64_check.mjs /tmp/z
"""
import torch, sys
sd = {'a': torch.arange(10, dtype=torch.float32), 'big': torch.zeros(1_100_000_000, dtype=torch.float32), 'c': torch.arange(7, dtype=torch.float16)}
torch.save(sd, sys.argv[1])
