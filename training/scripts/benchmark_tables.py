#!/usr/bin/env python3
"""The side-by-side tables of BENCHMARKS.md ("Anomaly models on the reference datasets")
from one run of each side:

    settlewatch eval --csv DATASETS --model all --seeds 5 --json > ours.json
    python3 peer_baselines.py peers.tsv DATASETS
    python3 benchmark_tables.py ours.json peers.tsv

Prints Markdown: ROC-AUC, average precision, fit seconds, scoring rows/s (one thread, and
ours in batch over every core), our Isolation Forest against scikit-learn's, and the
ensemble's wins against the best peer. The best value of each quality row is in bold.
"""
import json
import math
import sys

PEERS = [("sklearn_IForest", "sklearn IForest"), ("pyod_ECOD", "PyOD ECOD"), ("pyod_HBOS", "PyOD HBOS")]


def main():
    ours = json.load(open(sys.argv[1]))
    peers = {}
    for line in open(sys.argv[2]).read().splitlines()[1:]:
        f = line.split("\t")
        peers[(f[0], f[5])] = {
            "roc_auc": float(f[6]),
            "average_precision": float(f[8]),
            "fit_seconds": float(f[10]),
            "rows_per_second": float(f[11]),
        }
    models = []
    for e in ours:
        if e["model"] not in models:
            models.append(e["model"])
    datasets = sorted({e["dataset"] for e in ours}, key=str.lower)
    cell = {(e["dataset"], e["model"]): e["mean"] for e in ours}
    columns = models + [label for _, label in PEERS]

    def value(dataset, column, metric):
        if column in models:
            return cell[(dataset, column)][metric]
        key = dict((label, name) for name, label in PEERS)[column]
        return peers[(dataset, key)][metric]

    def table(title, metric, fmt, summary, bold):
        print(f"**{title}**\n")
        print("| dataset | " + " | ".join(columns) + " |")
        print("|---|" + "---:|" * len(columns))
        for d in datasets:
            values = [value(d, c, metric) for c in columns]
            best = max(values) if bold else None
            cells = [f"**{fmt(v)}**" if bold and v == best else fmt(v) for v in values]
            print(f"| {d} | " + " | ".join(cells) + " |")
        agg = []
        for c in columns:
            vs = [value(d, c, metric) for d in datasets]
            agg.append(fmt(sum(vs) / len(vs)) if summary == "mean" else fmt(math.exp(sum(map(math.log, vs)) / len(vs))))
        print(f"| **{'mean' if summary == 'mean' else 'geometric mean'}** | " + " | ".join(agg) + " |\n")

    table("ROC-AUC (mean over seeds)", "roc_auc", lambda v: f"{v:.4f}", "mean", True)
    table("Average precision (mean over seeds)", "average_precision", lambda v: f"{v:.4f}", "mean", True)
    table("Fit seconds (median over seeds)", "fit_seconds", lambda v: f"{v:.5f}", "geo", False)
    table("Scoring rows/s, one thread (median over seeds)", "rows_per_second", lambda v: f"{v:,.0f}", "geo", False)

    print("**Our scoring rows/s in batch over both cores (`training::batch`, median over seeds)**\n")
    print("| dataset | " + " | ".join(models) + " |")
    print("|---|" + "---:|" * len(models))
    for d in datasets:
        print(f"| {d} | " + " | ".join(f"{cell[(d, m)]['batch_rows_per_second']:,.0f}" for m in models) + " |")
    print()

    print("**Our Isolation Forest against scikit-learn's (both scoring ratios against its one thread)**\n")
    print("| dataset | ROC-AUC ours | sklearn | difference | scoring ratio, one thread | scoring ratio, batch | fit speed ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    ratios = [[], [], []]
    for d in datasets:
        o, p = cell[(d, "iforest")], peers[(d, "sklearn_IForest")]
        r = [o["rows_per_second"] / p["rows_per_second"], o["batch_rows_per_second"] / p["rows_per_second"],
             p["fit_seconds"] / o["fit_seconds"]]
        for i, x in enumerate(r):
            ratios[i].append(x)
        print(f"| {d} | {o['roc_auc']:.4f} | {p['roc_auc']:.4f} | {o['roc_auc'] - p['roc_auc']:+.4f} | "
              f"{r[0]:.1f}× | {r[1]:.1f}× | {r[2]:.1f}× |")
    geo = [math.exp(sum(map(math.log, x)) / len(x)) for x in ratios]
    print(f"| **geometric mean** | | | | **{geo[0]:.1f}×** | **{geo[1]:.1f}×** | **{geo[2]:.1f}×** |")
    print(f"\none-thread ratio >= 10x on {sum(x >= 10 for x in ratios[0])} of {len(datasets)}; "
          f"batch ratio >= 10x on {sum(x >= 10 for x in ratios[1])}; min batch {min(ratios[1]):.1f}x\n")

    wins = [d for d in datasets
            if cell[(d, "ensemble")]["roc_auc"] >= max(peers[(d, k)]["roc_auc"] for k, _ in PEERS)]
    print(f"ensemble >= best peer on {len(wins)} of {len(datasets)}: {', '.join(wins)}")


if __name__ == "__main__":
    main()
