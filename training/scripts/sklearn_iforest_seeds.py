#!/usr/bin/env python3
"""scikit-learn IsolationForest ROC-AUC over many seeds, to compare with
`settlewatch eval --model iforest --seeds N` beyond the 5 seeds of peer_baselines.py.

Same protocol and parameters as ../shared/datasets/peer_baselines.py (100 trees,
max_samples 256, fit on all rows, score all rows, n_jobs 1), seeds 0..N-1.

Usage: python3 sklearn_iforest_seeds.py SEEDS FILE.csv.gz...
Prints: dataset, mean ROC-AUC, standard deviation over seeds, seeds.
"""
import gzip
import os
import sys
import warnings

import numpy as np
from sklearn.ensemble import IsolationForest
from sklearn.metrics import roc_auc_score

warnings.filterwarnings("ignore")


def main():
    seeds = int(sys.argv[1])
    print("dataset\troc_auc_mean\troc_auc_std\tseeds")
    for path in sys.argv[2:]:
        with gzip.open(path, "rt") as handle:
            table = np.loadtxt(handle, delimiter=",", skiprows=1)
        rows, labels = np.ascontiguousarray(table[:, :-1]), table[:, -1]
        aucs = []
        for seed in range(seeds):
            model = IsolationForest(n_estimators=100, max_samples=256, n_jobs=1, random_state=seed).fit(rows)
            aucs.append(roc_auc_score(labels, -model.score_samples(rows)))
        name = os.path.basename(path).removesuffix(".csv.gz")
        print(f"{name}\t{np.mean(aucs):.4f}\t{np.std(aucs):.4f}\t{seeds}", flush=True)


if __name__ == "__main__":
    main()
