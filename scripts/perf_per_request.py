#!/usr/bin/env python3
"""Per-request CPU of each function, from `perf script` output.

Reads `perf script --no-inline -F tid,period,ip,sym` (call graphs recorded
with `perf record --call-graph dwarf`) and the number of requests served
while perf recorded; prints each function's inclusive and self time in
microseconds per request. With `--under SYMBOL_REGEX` it prints instead
what the outermost frame matching SYMBOL_REGEX spends its time in (its
callees, `--depth` frames deep). Used by scripts/profile-serve.

    perf_per_request.py perf.txt 27230
    perf_per_request.py perf.txt 27230 --under 'oasis::policy::Policy::call$'
"""
import argparse
import collections
import re

HEADER = re.compile(r"^\s*\d+\s+(\d+)\s*$")


def samples(path):
    """(period in ns, frames leaf first) of each sample."""
    cur = None
    with open(path) as f:
        for line in f:
            m = HEADER.match(line)
            if m:
                if cur:
                    yield cur
                cur = (int(m.group(1)), [])
            elif line.strip() and cur is not None:
                parts = line.strip().split(None, 1)
                sym = parts[1] if len(parts) > 1 else "?"
                cur[1].append(re.sub(r"::h[0-9a-f]{16}$", "", sym)[:160])
    if cur:
        yield cur


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("script")
    ap.add_argument("requests", type=float)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--under")
    ap.add_argument("--depth", type=int, default=1)
    a = ap.parse_args()
    us = 1e-3 / a.requests  # ns of samples -> µs per request
    inc, own, total = collections.Counter(), collections.Counter(), 0
    under, under_total = collections.Counter(), 0
    pat = re.compile(a.under) if a.under else None
    for period, frames in samples(a.script):
        total += period
        if frames:
            own[frames[0]] += period
        for s in set(frames):
            inc[s] += period
        if pat:
            hits = [i for i, s in enumerate(frames) if pat.search(s)]
            if hits:
                i = max(hits)
                under_total += period
                path = frames[max(i - a.depth, 0):i][::-1] or ["<self>"]
                under[" > ".join(path)] += period
    print(f"{total * us:.1f} µs of CPU per request in all")
    if pat:
        print(f"{under_total * us:.1f} µs under {a.under}:")
        for path, v in under.most_common(a.top):
            print(f"{v * us:8.1f}  {path}")
        return
    for name, c in (("inclusive", inc), ("self", own)):
        print(f"== {name}")
        for s, v in c.most_common(a.top):
            print(f"{v * us:8.1f}  {s}")


if __name__ == "__main__":
    main()
