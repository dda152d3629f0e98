"""Turn a ``python -m convcore.bench --json FILE`` result into the reStructuredText table the
benchmarks page includes.

    python docs/bench_table.py docs/figures/bench_nchw_2threads.json \
        > docs/figures/bench_nchw_2threads.rst.inc

One row per layer: convcore's GFLOP/s for each pass with its samples' spread, and its speed
over each peer (> 1: convcore is faster), a ratio marked ``!`` where either side's samples
spread over 30 % (the bench's own flag); then the geometric means.
"""
from __future__ import annotations

import json
import math
import sys
from typing import Any, Dict, List


def _ratio(row: Dict[str, Any], peer: str) -> str:
    r = row.get("ratios", {}).get(peer)
    if r is None:
        return "—"
    return f"{r:.2f}" + ("!" if row.get("noisy", {}).get(peer) else "")


def table(doc: Dict[str, Any]) -> str:
    rows: List[Dict[str, Any]] = doc["rows"]
    passes = list(dict.fromkeys(r["pass"] for r in rows))
    layers = list(dict.fromkeys(r["layer"]["name"] for r in rows))
    peers = [p for p in ("numpy", "torch") if any(p in r["results"] for r in rows)]
    short = {"numpy": "np", "torch": "torch"}
    titles = {"fwd": "fwd", "bwd_data": "bwd data", "bwd_weight": "bwd weight"}
    head = ["layer"]
    for p in passes:
        head += [titles.get(p, p)] + [f"×{short.get(peer, peer)}" for peer in peers]
    body = []
    for name in layers:
        line = [f"``{name}``"]
        for p in passes:
            row = next(r for r in rows if r["layer"]["name"] == name and r["pass"] == p)
            res = row["results"]["convcore"]
            line.append(f"{res['gflops']:.0f} ({100 * res['spread']:.0f} %)")
            line += [_ratio(row, peer) for peer in peers]
        body.append(line)
    geo = ["**geomean**"]
    for p in passes:
        geo.append("")
        for peer in peers:
            vals = [r["ratios"][peer] for r in rows
                    if r["pass"] == p and r.get("ratios", {}).get(peer)]
            g = math.exp(sum(map(math.log, vals)) / len(vals)) if vals else float("nan")
            geo.append(f"**{g:.2f}**")
    body.append(geo)
    widths = [max(len(r[i]) for r in [head] + body) for i in range(len(head))]
    rule = "  ".join("=" * w for w in widths)

    def fmt(cells: List[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

    return "\n".join([rule, fmt(head), rule] + [fmt(r) for r in body] + [rule]) + "\n"


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    with open(argv[0], encoding="utf-8") as f:
        doc = json.load(f)
    sys.stdout.write(table(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
