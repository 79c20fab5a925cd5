# Lines up an nvidia-smi log with a probe's run windows: mean SM clock, memory clock and power draw
# over each window. The probe prints `times <shape> <variant> <start ms> <end ms>` (split_probe.mjs
# with SP_TIMES=1); the log comes from
#   nvidia-smi --query-gpu=timestamp,clocks.sm,clocks.mem,power.draw --format=csv,noheader,nounits -lms 20 > smi.csv &
# Usage: python3 bench/smi_windows.py probe.log smi.csv
import sys
from datetime import datetime

wins = []
for line in open(sys.argv[1]):
    if line.startswith('times '):
        _, shape, variant, t0, t1 = line.split()
        wins.append((f'{shape} {variant}', float(t0), float(t1)))
rows = []
for line in open(sys.argv[2]):
    parts = [p.strip() for p in line.split(',')]
    try:
        t = datetime.strptime(parts[0], '%Y/%m/%d %H:%M:%S.%f').timestamp() * 1000
        rows.append((t, float(parts[1]), float(parts[2]), float(parts[3])))
    except (ValueError, IndexError):
        continue
print('run | samples | SM MHz | memory MHz | power W')
for name, t0, t1 in wins:
    # The middle 80 % of the window: its edges hold preparation and the queue's drain.
    a, b = t0 + 0.1 * (t1 - t0), t1 - 0.1 * (t1 - t0)
    s = [r for r in rows if a <= r[0] <= b]
    if not s:
        print(f'{name} | 0 | — | — | —')
        continue
    m = lambda i: sum(r[i] for r in s) / len(s)
    print(f'{name} | {len(s)} | {m(1):.0f} | {m(2):.0f} | {m(3):.0f}')
