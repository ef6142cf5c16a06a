//! Batch scoring over all cores: the rows are cut into chunks and each chunk is scored by
//! the model's own single-threaded [`Model::score_rows`] on a rayon worker. Serving scores
//! one transaction per call on the caller's thread; this is for the passes over whole
//! tables (`train` scoring its rows for the alert thresholds, `eval`), where batch scoring
//! may use every core.
//!
//! Chunks are large enough that the scheduling cost is negligible and each worker keeps
//! the model's per-chunk scratch in its own cache; a call with fewer rows than two chunks
//! stays on the caller's thread. The scores are the same values, in the same order, as
//! one `score_rows` call, because every detector scores each row independently.

use ndarray::{Array1, ArrayView2, Axis};
use rayon::prelude::*;

use crate::Model;

/// Rows per chunk handed to one worker.
pub const CHUNK_ROWS: usize = 1_024;

/// Scores every row of `rows`, spreading chunks of [`CHUNK_ROWS`] over rayon's pool.
pub fn score_rows_parallel<M: Model + Sync + ?Sized>(model: &M, rows: ArrayView2<'_, f64>) -> Array1<f64> {
    if rows.nrows() < 2 * CHUNK_ROWS || rayon::current_num_threads() < 2 {
        return model.score_rows(rows);
    }
    let chunks: Vec<ArrayView2<'_, f64>> = rows.axis_chunks_iter(Axis(0), CHUNK_ROWS).collect();
    let mut scores = Array1::zeros(rows.nrows());
    scores
        .as_slice_mut()
        .expect("a fresh array is contiguous")
        .par_chunks_mut(CHUNK_ROWS)
        .zip(chunks.into_par_iter())
        .for_each(|(out, chunk)| {
            let chunk_scores = model.score_rows(chunk);
            out.copy_from_slice(chunk_scores.as_slice().expect("a fresh array is contiguous"));
        });
    scores
}

#[cfg(test)]
mod tests {
    use ndarray::Array2;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    use super::*;
    use crate::isolation_forest::IsolationForestParams;
    use crate::Fit;

    #[test]
    fn parallel_scores_equal_single_threaded_scores_bit_for_bit() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        // Not a multiple of the chunk size, so the last chunk is short.
        let rows = Array2::from_shape_fn((3 * CHUNK_ROWS + 123, 5), |_| rng.gen_range(-3.0..3.0));
        let model = IsolationForestParams::default().fit(rows.view(), 1).unwrap();
        let single = model.score_rows(rows.view());
        let parallel = score_rows_parallel(&model, rows.view());
        assert_eq!(single.len(), parallel.len());
        for (row, (a, b)) in single.iter().zip(parallel.iter()).enumerate() {
            assert_eq!(a.to_bits(), b.to_bits(), "row {row}");
        }
    }
}
