//! The output layer fused with the softmax cross-entropy: logits, loss and
//! softmax in one pass over rows split across the threads, and its gradients.

use super::gemm::{matmul, matmul_uninit};
use super::math::exp_all;
use super::pool::{parallel_for_each_mut, threads};

/// Rows per work item of the classifier: the rows split evenly over the
/// threads, in blocks of at least 256 (fewer rows are not worth a thread).
fn xent_rows(n: usize) -> usize {
    n.div_ceil(threads()).max(256)
}

/// Mean softmax cross-entropy of the logits `h w + b` (`h` `[n, d]`, `w`
/// `[d, v]`, `b` `[v]`) against `labels`; also returns the softmax `[n, v]`
/// for the backward pass. Rows are split over the threads; the mean is
/// summed in row order whatever the split.
#[allow(clippy::too_many_arguments)]
pub fn linear_xent(
    h: &[f32],
    w: &[f32],
    b: &[f32],
    labels: &[i64],
    n: usize,
    d: usize,
    v: usize,
) -> (f64, Vec<f32>) {
    assert_eq!(labels.len(), n, "one label per row");
    assert!(
        h.len() >= n * d && w.len() >= d * v && b.len() >= v,
        "classifier operand sizes"
    );
    let mut probs = vec![0.0f32; n * v];
    let mut losses = vec![0.0f64; n];
    let per = xent_rows(n);
    let mut work: Vec<_> = probs
        .chunks_mut((per * v).max(1))
        .zip(losses.chunks_mut(per))
        .enumerate()
        .collect();
    parallel_for_each_mut(&mut work, |(c, (probs, losses))| {
        let (lo, rows) = (*c * per, losses.len());
        for row in probs.chunks_exact_mut(v) {
            row.copy_from_slice(&b[..v]);
        }
        matmul(
            probs,
            &h[lo * d..(lo + rows) * d],
            w,
            rows,
            v,
            d,
            false,
            false,
            true,
        );
        // every row less its largest logit, then `e^x` of the whole block in
        // one vectorised pass (the library `exp`, per value, was 5% of a step)
        let mut targets = Vec::with_capacity(rows);
        for (row, &label) in probs.chunks_exact_mut(v).zip(&labels[lo..lo + rows]) {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            targets.push((row[label as usize] - max) as f64);
            row.iter_mut().for_each(|x| *x -= max);
        }
        exp_all(probs);
        for ((row, target), loss) in probs
            .chunks_exact_mut(v)
            .zip(targets)
            .zip(losses.iter_mut())
        {
            let z: f64 = row.iter().map(|&e| e as f64).sum();
            let inv = (1.0 / z) as f32;
            // log-sum-exp minus the target's logit: exact for any logits (no
            // clamped log of a tiny probability), and NaN once they overflow
            *loss = z.ln() - target;
            for x in row.iter_mut() {
                *x *= inv;
            }
        }
    });
    (losses.iter().sum::<f64>() / n as f64, probs)
}

/// Gradients of [`linear_xent`] scaled by `dloss`: `(dh [n, d], dw [d, v], db [v])`.
#[allow(clippy::too_many_arguments)]
pub fn linear_xent_backward(
    h: &[f32],
    w: &[f32],
    mut probs: Vec<f32>,
    labels: &[i64],
    n: usize,
    d: usize,
    v: usize,
    dloss: f32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let scale = dloss / n as f32;
    let mut db = vec![0.0f32; v];
    for (row, &label) in probs.chunks_exact_mut(v).zip(labels) {
        row[label as usize] -= 1.0;
        for (x, acc) in row.iter_mut().zip(db.iter_mut()) {
            *x *= scale;
            *acc += *x;
        }
    }
    // per row block: its rows of dh = dlogits w^T and its share of dw = h^T dlogits
    let per = xent_rows(n);
    // `dh` written block by block, not zeroed first
    let mut dh: Vec<f32> = Vec::with_capacity(n * d);
    let mut work: Vec<_> = dh.spare_capacity_mut()[..n * d]
        .chunks_mut((per * d).max(1))
        .enumerate()
        .map(|(c, dh)| (c, dh, Vec::new()))
        .collect();
    parallel_for_each_mut(&mut work, |(c, dh, dw)| {
        let lo = *c * per;
        let rows = dh.len() / d;
        let p = &probs[lo * v..(lo + rows) * v];
        matmul_uninit(dh, p, w, rows, d, v, false, true);
        *dw = vec![0.0f32; d * v];
        matmul(
            dw,
            &h[lo * d..(lo + rows) * d],
            p,
            d,
            v,
            rows,
            true,
            false,
            false,
        );
    });
    let mut dw = vec![0.0f32; d * v];
    for (_, _, part) in &work {
        for (a, b) in dw.iter_mut().zip(part) {
            *a += b;
        }
    }
    drop(work);
    // SAFETY: the blocks cover `n * d` values, each written whole by its product
    unsafe { dh.set_len(n * d) };
    (dh, dw, db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::pool::{TestThreads, set_threads};

    /// The classifier split over threads (600 rows: two blocks of 300)
    /// gives what one block gives.
    #[test]
    fn linear_xent_split_over_threads_equals_one_block() {
        let (n, d, v) = (600, 24, 27);
        let h: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7 % 23) as f32 - 11.0) / 9.0)
            .collect();
        let w: Vec<f32> = (0..d * v)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 9.0)
            .collect();
        let b: Vec<f32> = (0..v).map(|i| i as f32 / 30.0).collect();
        let labels: Vec<i64> = (0..n).map(|i| (i * 11 % v) as i64).collect();
        let run = |threads: usize| {
            let _guard = TestThreads::lock();
            set_threads(threads);
            let (loss, probs) = linear_xent(&h, &w, &b, &labels, n, d, v);
            let g = linear_xent_backward(&h, &w, probs.clone(), &labels, n, d, v, 0.7);
            (loss, probs, g)
        };
        let (l1, p1, (dh1, dw1, db1)) = run(1);
        let (l2, p2, (dh2, dw2, db2)) = run(2);
        assert!((l1 - l2).abs() < 1e-9, "loss {l1} vs {l2}");
        for (what, a, b) in [
            ("probs", &p1, &p2),
            ("dh", &dh1, &dh2),
            ("dw", &dw1, &dw2),
            ("db", &db1, &db2),
        ] {
            assert_eq!(a.len(), b.len(), "{what}");
            for (i, (x, y)) in a.iter().zip(b.iter()).enumerate() {
                assert!((x - y).abs() < 1e-5, "{what}[{i}]: {x} vs {y}");
            }
        }
    }

    #[test]
    fn linear_xent_gradients_match_finite_differences() {
        let (n, d, v) = (3, 4, 5);
        let h: Vec<f32> = (0..n * d)
            .map(|i| ((i * 7 % 11) as f32 - 5.0) / 7.0)
            .collect();
        let w: Vec<f32> = (0..d * v)
            .map(|i| ((i * 5 % 13) as f32 - 6.0) / 9.0)
            .collect();
        let b: Vec<f32> = (0..v).map(|i| i as f32 / 10.0).collect();
        let labels = [1i64, 4, 0];
        let (loss, probs) = linear_xent(&h, &w, &b, &labels, n, d, v);
        assert!(loss > 0.0);
        let (dh, dw, db) = linear_xent_backward(&h, &w, probs, &labels, n, d, v, 1.0);
        let eps = 1e-2f32;
        let f = |h: &[f32], w: &[f32], b: &[f32]| linear_xent(h, w, b, &labels, n, d, v).0;
        for (x, g, which) in [(&h, &dh, 0), (&w, &dw, 1), (&b, &db, 2)] {
            for k in 0..x.len() {
                let (mut p, mut m) = (x.to_vec(), x.to_vec());
                p[k] += eps;
                m[k] -= eps;
                let num = match which {
                    0 => (f(&p, &w, &b) - f(&m, &w, &b)) / (2.0 * eps as f64),
                    1 => (f(&h, &p, &b) - f(&h, &m, &b)) / (2.0 * eps as f64),
                    _ => (f(&h, &w, &p) - f(&h, &w, &m)) / (2.0 * eps as f64),
                };
                assert!(
                    (num - g[k] as f64).abs() < 1e-3,
                    "operand {which}[{k}]: {num} vs {}",
                    g[k]
                );
            }
        }
    }

    /// Far-off logits give the exact (huge) loss, not a clamped one, and
    /// overflowed ones give NaN, so a diverging run is seen as diverging.
    #[test]
    fn linear_xent_is_exact_for_large_logits_and_nan_on_overflow() {
        // logits [1e30, 0]: the loss of label 1 is 1e30
        let (loss, _) = linear_xent(&[1.0], &[1e30, 0.0], &[0.0, 0.0], &[1], 1, 1, 2);
        assert!((loss / 1e30 - 1.0).abs() < 1e-6, "{loss}");
        let (loss, _) = linear_xent(&[1.0], &[f32::INFINITY, 0.0], &[0.0, 0.0], &[1], 1, 1, 2);
        assert!(loss.is_nan(), "{loss}");
        // an ordinary case: logits [0, 0] give ln 2
        let (loss, _) = linear_xent(&[1.0], &[0.0, 0.0], &[0.0, 0.0], &[0], 1, 1, 2);
        assert!((loss - std::f64::consts::LN_2).abs() < 1e-9, "{loss}");
    }
}
