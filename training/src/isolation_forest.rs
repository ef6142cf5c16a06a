//! Isolation Forest (Liu, Ting and Zhou 2008), built to rank like scikit-learn's
//! `IsolationForest` and to score much faster.
//!
//! Why it exists: it is the reference unsupervised detector for tabular data, needs no
//! distance or density model, and its defaults (100 trees, 256 rows per tree) work across
//! very different data without tuning.
//!
//! The algorithm is the literature's and scikit-learn's: each tree is grown on a subsample
//! of `min(subsample_rows, n)` rows drawn without replacement, to a depth of at most
//! `ceil(log2(subsample))`. A node splits on a feature drawn uniformly among those that
//! are not constant in the node, at a threshold drawn uniformly in `[min, max)` of that
//! feature in the node (`value <= threshold` goes left). A node with one row, only constant
//! features, or at the depth limit is a leaf; its path length is its depth plus `c(rows in
//! the leaf)`, the average path length of an unsuccessful search in a binary search tree of
//! that size. The score is `2^(-E[h(x)] / c(subsample))`, scikit-learn's `-score_samples`.
//!
//! Layout, for speed: every tree is stored as a complete binary tree of the forest's depth
//! in flat arrays (children of node `i` at `2i+1`, `2i+2`). A leaf above the depth limit is
//! padded with pass-through splits (threshold `f64::MAX`: always left) down to the last level, so
//! scoring is exactly `depth` branch-free steps per tree with no child pointers, and four
//! trees are walked at once to overlap their memory latencies. Scoring allocates nothing.
//!
//! Explanation (per-feature path-depth attribution): for every tree, the row's isolation
//! shortfall `c(subsample) - h_t(x)` (positive when the row is isolated sooner than an
//! average row) is shared among the splits on its path in proportion to how much each split
//! isolated it, `log2(rows in node / rows in the child taken)`; the pass-through padding
//! isolates nothing and gets nothing. Each split credits its feature, and the credits are
//! averaged over trees. The contributions add up to `c(subsample) - E[h(x)]`, the quantity
//! the score is a monotone function of, so a feature's share is its share of "why this row
//! was isolated early". Negative contributions mean the feature kept the row with the crowd.

use ndarray::{Array1, ArrayView2};
use rand::seq::index;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::model::check_training_rows;
use crate::{Fit, Model, TrainingError};

/// Largest number of trees: beyond a few hundred trees scores stop changing.
pub const TREES_MAX: usize = 10_000;
/// Largest subsample per tree: depth `ceil(log2(4096)) = 12` keeps a tree at 8,191 nodes.
pub const SUBSAMPLE_ROWS_MAX: usize = 4_096;

/// Rows scored together per tree by [`Model::score_rows`] (their running totals live on the stack).
const SCORE_BLOCK_ROWS: usize = 256;
/// Rows descending one tree side by side, so their memory latencies overlap.
const SCORE_GROUP_ROWS: usize = 8;

/// Threshold of the padding under a leaf: every finite value goes left. `f64::MAX` rather
/// than +inf so the model stays valid JSON.
const PASS_THROUGH_THRESHOLD: f64 = f64::MAX;

/// Euler–Mascheroni constant, for the harmonic number approximation in [`average_path_length`].
const EULER_GAMMA: f64 = 0.577_215_664_901_532_9;

/// Hyper-parameters of [`IsolationForest`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForestParams {
    /// Number of trees. Default 100 (Liu et al.; scikit-learn's `n_estimators`).
    pub trees: usize,
    /// Rows drawn without replacement for each tree; `min(subsample_rows, n)` is used.
    /// Default 256 (Liu et al.; scikit-learn's `max_samples`).
    pub subsample_rows: usize,
}

impl Default for IsolationForestParams {
    fn default() -> Self {
        IsolationForestParams { trees: 100, subsample_rows: 256 }
    }
}

/// One split of a tree: rows with `row[feature] <= threshold` go to the left child.
/// Pass-through padding under a leaf has `threshold = f64::MAX`.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Split {
    pub threshold: f64,
    pub feature: u32,
}

/// A fitted Isolation Forest: flat arrays of complete binary trees of depth `depth`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IsolationForest {
    n_features: usize,
    trees: usize,
    /// Depth of every (padded) tree: `ceil(log2(subsample))`.
    depth: u32,
    /// Rows each tree was grown on, `min(subsample_rows, n)`.
    subsample: usize,
    /// `c(subsample)`, the normaliser of the score (1 when `subsample = 1`).
    average_path_length_subsample: f64,
    /// `trees × (2^depth - 1)` splits, tree after tree, each in breadth-first order.
    splits: Vec<Split>,
    /// `trees × 2^depth` path lengths `h` of the last level (depth of the real leaf plus
    /// `c(rows in it)`), tree after tree.
    leaf_path_lengths: Vec<f64>,
    /// `trees × (2^(depth+1) - 1)` training rows that reached each node (splits then
    /// leaves, breadth-first), for explanations.
    node_rows: Vec<u32>,
}

/// `c(n)`: the average path length of an unsuccessful search in a binary search tree of
/// `n` keys, `2 H(n-1) - 2 (n-1)/n`, with `c(0) = c(1) = 0` and `c(2) = 1` (scikit-learn's
/// `_average_path_length`).
pub fn average_path_length(rows: usize) -> f64 {
    match rows {
        0 | 1 => 0.0,
        2 => 1.0,
        _ => {
            let n = rows as f64;
            2.0 * ((n - 1.0).ln() + EULER_GAMMA) - 2.0 * (n - 1.0) / n
        }
    }
}

impl Fit for IsolationForestParams {
    type Model = IsolationForest;

    fn check(&self) -> Result<(), TrainingError> {
        if self.trees == 0 || self.trees > TREES_MAX {
            return Err(TrainingError::InvalidParameter {
                name: "trees",
                reason: format!("{} is outside 1..={TREES_MAX}", self.trees),
            });
        }
        if self.subsample_rows < 2 || self.subsample_rows > SUBSAMPLE_ROWS_MAX {
            return Err(TrainingError::InvalidParameter {
                name: "subsample_rows",
                reason: format!("{} is outside 2..={SUBSAMPLE_ROWS_MAX}", self.subsample_rows),
            });
        }
        Ok(())
    }

    fn fit(&self, rows: ArrayView2<'_, f64>, seed: u64) -> Result<IsolationForest, TrainingError> {
        self.check()?;
        check_training_rows(rows, 1)?;
        if rows.ncols() > u32::MAX as usize {
            return Err(TrainingError::InvalidData(format!("{} features do not fit a u32 index", rows.ncols())));
        }
        let (n, n_features) = rows.dim();
        let subsample = self.subsample_rows.min(n);
        let depth = ceil_log2(subsample);
        let internal = (1usize << depth) - 1;
        let leaves = 1usize << depth;
        let nodes = internal + leaves;
        let mut forest = IsolationForest {
            n_features,
            trees: self.trees,
            depth,
            subsample,
            average_path_length_subsample: average_path_length(subsample).max(1.0),
            splits: Vec::with_capacity(self.trees * internal),
            leaf_path_lengths: Vec::with_capacity(self.trees * leaves),
            node_rows: Vec::with_capacity(self.trees * nodes),
        };
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut builder = TreeBuilder::new(n_features, subsample, depth);
        for _ in 0..self.trees {
            builder.grow(rows, &mut rng, &mut forest);
        }
        Ok(forest)
    }
}

/// `ceil(log2(n))` for `n >= 1`.
fn ceil_log2(n: usize) -> u32 {
    usize::BITS - (n.max(1) - 1).leading_zeros()
}

/// Scratch space reused across the trees of one fit.
struct TreeBuilder {
    n_features: usize,
    subsample: usize,
    depth: u32,
    /// The subsample, column-major: `columns[feature * subsample + local_row]`.
    columns: Vec<f64>,
    /// Local row ids, partitioned in place so each node owns a contiguous range.
    order: Vec<u32>,
    /// Per node: `[start, end)` into `order`, and the carried leaf path length for padding.
    range_start: Vec<u32>,
    range_end: Vec<u32>,
    carried_path_length: Vec<f64>,
    /// Features in the order they are tried at a node (partial Fisher–Yates shuffle).
    feature_order: Vec<u32>,
}

impl TreeBuilder {
    fn new(n_features: usize, subsample: usize, depth: u32) -> Self {
        let nodes = (1usize << (depth + 1)) - 1;
        TreeBuilder {
            n_features,
            subsample,
            depth,
            columns: vec![0.0; n_features * subsample],
            order: vec![0; subsample],
            range_start: vec![0; nodes],
            range_end: vec![0; nodes],
            carried_path_length: vec![f64::NAN; nodes],
            feature_order: (0..n_features as u32).collect(),
        }
    }

    fn grow(&mut self, rows: ArrayView2<'_, f64>, rng: &mut ChaCha8Rng, forest: &mut IsolationForest) {
        let n = rows.nrows();
        let sample = index::sample(rng, n, self.subsample);
        for (local, row) in sample.iter().enumerate() {
            for (feature, value) in rows.row(row).iter().enumerate() {
                self.columns[feature * self.subsample + local] = *value;
            }
        }
        for (local, slot) in self.order.iter_mut().enumerate() {
            *slot = local as u32;
        }
        let internal = (1usize << self.depth) - 1;
        let nodes = 2 * internal + 1;
        self.range_start[0] = 0;
        self.range_end[0] = self.subsample as u32;
        self.carried_path_length[..nodes].fill(f64::NAN);

        for node in 0..internal {
            let node_depth = (usize::BITS - 1 - (node + 1).leading_zeros()) as f64;
            let (start, end) = (self.range_start[node] as usize, self.range_end[node] as usize);
            let rows_here = end - start;
            forest.node_rows.push(rows_here as u32);
            let mut carried = self.carried_path_length[node];
            let mut split = None;
            if carried.is_nan() {
                split = if rows_here > 1 { self.choose_split(start, end, rng) } else { None };
                if split.is_none() {
                    carried = node_depth + average_path_length(rows_here);
                }
            }
            let (left, right) = (2 * node + 1, 2 * node + 2);
            match split {
                Some((feature, threshold)) => {
                    let middle = self.partition(start, end, feature, threshold);
                    forest.splits.push(Split { threshold, feature: feature as u32 });
                    self.range_start[left] = start as u32;
                    self.range_end[left] = middle as u32;
                    self.range_start[right] = middle as u32;
                    self.range_end[right] = end as u32;
                }
                None => {
                    // A leaf above the last level: pass-through padding carries its path
                    // length and rows down both sides (finite rows always go left; +inf
                    // would go right and find the same leaf).
                    forest.splits.push(Split { threshold: PASS_THROUGH_THRESHOLD, feature: 0 });
                    for child in [left, right] {
                        self.carried_path_length[child] = carried;
                        self.range_start[child] = start as u32;
                        self.range_end[child] = end as u32;
                    }
                }
            }
        }
        for leaf in internal..nodes {
            let rows_here = (self.range_end[leaf] - self.range_start[leaf]) as usize;
            forest.node_rows.push(rows_here as u32);
            let carried = self.carried_path_length[leaf];
            let path_length =
                if carried.is_nan() { self.depth as f64 + average_path_length(rows_here) } else { carried };
            forest.leaf_path_lengths.push(path_length);
        }
    }

    /// Draws features without replacement until one is not constant among the node's rows;
    /// returns it with a threshold uniform in `[min, max)`, or `None` if all are constant.
    fn choose_split(&mut self, start: usize, end: usize, rng: &mut ChaCha8Rng) -> Option<(usize, f64)> {
        for tried in 0..self.n_features {
            let pick = rng.gen_range(tried..self.n_features);
            self.feature_order.swap(tried, pick);
            let feature = self.feature_order[tried] as usize;
            let column = &self.columns[feature * self.subsample..(feature + 1) * self.subsample];
            let (mut min, mut max) = (f64::INFINITY, f64::NEG_INFINITY);
            for &local in &self.order[start..end] {
                let value = column[local as usize];
                min = min.min(value);
                max = max.max(value);
            }
            if max > min {
                let mut threshold = rng.gen_range(min..max);
                if threshold >= max {
                    threshold = min;
                }
                return Some((feature, threshold));
            }
        }
        None
    }

    /// Moves the rows with `value <= threshold` first; returns where the right part starts.
    fn partition(&mut self, start: usize, end: usize, feature: usize, threshold: f64) -> usize {
        let column = &self.columns[feature * self.subsample..(feature + 1) * self.subsample];
        let mut middle = start;
        for position in start..end {
            let local = self.order[position];
            if column[local as usize] <= threshold {
                self.order.swap(middle, position);
                middle += 1;
            }
        }
        middle
    }
}

impl IsolationForest {
    fn internal_nodes(&self) -> usize {
        (1usize << self.depth) - 1
    }

    /// Index of the last-level node `row` reaches in tree `tree`, relative to the tree.
    #[inline(always)]
    fn descend(splits: &[Split], depth: u32, row: &[f64]) -> usize {
        let mut node = 0usize;
        for _ in 0..depth {
            let split = splits[node];
            node = 2 * node + 1 + (row[split.feature as usize] > split.threshold) as usize;
        }
        node
    }

    /// Mean path length `E[h(x)]` of `row` over the trees.
    fn mean_path_length(&self, row: &[f64]) -> f64 {
        let internal = self.internal_nodes();
        let leaves = internal + 1;
        let depth = self.depth;
        let mut total = 0.0;
        let mut split_chunks = self.splits.chunks_exact(4 * internal.max(1));
        let mut leaf_chunks = self.leaf_path_lengths.chunks_exact(4 * leaves);
        if internal == 0 {
            return self.leaf_path_lengths.iter().fold(0.0, |total, length| total + length) / self.trees as f64;
        }
        for (splits, leaf_lengths) in (&mut split_chunks).zip(&mut leaf_chunks) {
            let (s0, rest) = splits.split_at(internal);
            let (s1, rest) = rest.split_at(internal);
            let (s2, s3) = rest.split_at(internal);
            let (mut n0, mut n1, mut n2, mut n3) = (0usize, 0usize, 0usize, 0usize);
            for _ in 0..depth {
                let (a, b, c, d) = (s0[n0], s1[n1], s2[n2], s3[n3]);
                n0 = 2 * n0 + 1 + (row[a.feature as usize] > a.threshold) as usize;
                n1 = 2 * n1 + 1 + (row[b.feature as usize] > b.threshold) as usize;
                n2 = 2 * n2 + 1 + (row[c.feature as usize] > c.threshold) as usize;
                n3 = 2 * n3 + 1 + (row[d.feature as usize] > d.threshold) as usize;
            }
            // Added one by one, in tree order, so the sum is bit-identical to `score_rows`.
            total += leaf_lengths[n0 - internal];
            total += leaf_lengths[leaves + n1 - internal];
            total += leaf_lengths[2 * leaves + n2 - internal];
            total += leaf_lengths[3 * leaves + n3 - internal];
        }
        for (splits, leaf_lengths) in
            split_chunks.remainder().chunks_exact(internal).zip(leaf_chunks.remainder().chunks_exact(leaves))
        {
            total += leaf_lengths[Self::descend(splits, depth, row) - internal];
        }
        total / self.trees as f64
    }

    /// `2^(-E[h(x)] / c(subsample))`.
    fn score_from_mean_path_length(&self, mean_path_length: f64) -> f64 {
        (-mean_path_length / self.average_path_length_subsample).exp2()
    }

    /// Rows each tree was grown on.
    pub fn subsample(&self) -> usize {
        self.subsample
    }
}

impl Model for IsolationForest {
    fn n_features(&self) -> usize {
        self.n_features
    }

    fn score(&self, row: &[f64]) -> f64 {
        debug_assert_eq!(row.len(), self.n_features);
        self.score_from_mean_path_length(self.mean_path_length(row))
    }

    /// Batch scoring, tree-major: each tree (a few KB) stays in L1 cache while it routes a
    /// block of rows, eight at a time so their descents overlap. Same values as [`Model::score`].
    fn score_rows(&self, rows: ArrayView2<'_, f64>) -> Array1<f64> {
        debug_assert_eq!(rows.ncols(), self.n_features);
        let contiguous = rows.as_standard_layout();
        let data = contiguous.as_slice().unwrap_or(&[]);
        let n_features = self.n_features;
        let internal = self.internal_nodes();
        let leaves = internal + 1;
        let mut scores = Array1::zeros(rows.nrows());
        let scores_slice = scores.as_slice_mut().unwrap_or(&mut []);
        for (block, block_scores) in
            data.chunks(SCORE_BLOCK_ROWS * n_features).zip(scores_slice.chunks_mut(SCORE_BLOCK_ROWS))
        {
            let mut totals = [0.0f64; SCORE_BLOCK_ROWS];
            for tree in 0..self.trees {
                let splits = &self.splits[tree * internal..(tree + 1) * internal];
                let leaf_lengths = &self.leaf_path_lengths[tree * leaves..(tree + 1) * leaves];
                let mut group_rows = block.chunks_exact(SCORE_GROUP_ROWS * n_features);
                let mut position = 0;
                for group in &mut group_rows {
                    let mut nodes = [0usize; SCORE_GROUP_ROWS];
                    for _ in 0..self.depth {
                        for (lane, node) in nodes.iter_mut().enumerate() {
                            let split = splits[*node];
                            let value = group[lane * n_features + split.feature as usize];
                            *node = 2 * *node + 1 + (value > split.threshold) as usize;
                        }
                    }
                    for (lane, node) in nodes.iter().enumerate() {
                        totals[position + lane] += leaf_lengths[node - internal];
                    }
                    position += SCORE_GROUP_ROWS;
                }
                for row in group_rows.remainder().chunks_exact(n_features) {
                    totals[position] += leaf_lengths[Self::descend(splits, self.depth, row) - internal];
                    position += 1;
                }
            }
            for (score, total) in block_scores.iter_mut().zip(totals.iter()) {
                *score = self.score_from_mean_path_length(total / self.trees as f64);
            }
        }
        scores
    }

    fn explain(&self, row: &[f64], contributions: &mut [f64]) {
        debug_assert_eq!(row.len(), self.n_features);
        contributions.fill(0.0);
        let internal = self.internal_nodes();
        let leaves = internal + 1;
        let nodes = internal + leaves;
        let average = average_path_length(self.subsample);
        for tree in 0..self.trees {
            let splits = &self.splits[tree * internal..(tree + 1) * internal];
            let node_rows = &self.node_rows[tree * nodes..(tree + 1) * nodes];
            let last = Self::descend(splits, self.depth, row);
            let leaf_rows = node_rows[last].max(1) as f64;
            let isolation_bits = (node_rows[0] as f64 / leaf_rows).log2();
            if isolation_bits <= 0.0 {
                continue;
            }
            let shortfall = average - self.leaf_path_lengths[tree * leaves + last - internal];
            let share_per_bit = shortfall / isolation_bits / self.trees as f64;
            let mut node = 0usize;
            for _ in 0..self.depth {
                let split = splits[node];
                let child = 2 * node + 1 + (row[split.feature as usize] > split.threshold) as usize;
                let bits = (node_rows[node] as f64 / node_rows[child].max(1) as f64).log2();
                if bits > 0.0 {
                    contributions[split.feature as usize] += share_per_bit * bits;
                }
                node = child;
            }
        }
    }
}
