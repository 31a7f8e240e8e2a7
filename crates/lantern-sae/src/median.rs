//! The geometric median of a set of points (Weiszfeld's algorithm): `b_dec`'s initial value, as
//! OpenAI's TopK SAE uses, robust to the outlier tokens a mean is pulled by.

/// The point minimising the sum of Euclidean distances to `points` (`[n, d]` row-major).
pub fn geometric_median(points: &[f32], d: usize, iters: usize) -> Vec<f32> {
    let n = points.len() / d.max(1);
    let mut y = vec![0f64; d];
    if n == 0 {
        return vec![0.0; d];
    }
    for p in points.chunks_exact(d) {
        y.iter_mut()
            .zip(p)
            .for_each(|(a, &b)| *a += b as f64 / n as f64);
    }
    for _ in 0..iters {
        let mut num = vec![0f64; d];
        let mut den = 0f64;
        for p in points.chunks_exact(d) {
            let dist = p
                .iter()
                .zip(&y)
                .map(|(&a, b)| (a as f64 - b).powi(2))
                .sum::<f64>()
                .sqrt()
                .max(1e-8);
            let w = 1.0 / dist;
            num.iter_mut().zip(p).for_each(|(a, &b)| *a += w * b as f64);
            den += w;
        }
        let next: Vec<f64> = num.iter().map(|a| a / den).collect();
        let moved: f64 = next.iter().zip(&y).map(|(a, b)| (a - b).powi(2)).sum();
        y = next;
        if moved.sqrt() < 1e-7 {
            break;
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_ignores_an_outlier_that_moves_the_mean() {
        // Four points around the origin and one far away.
        let pts = [1.0, 0.0, -1.0, 0.0, 0.0, 1.0, 0.0, -1.0, 1000.0, 1000.0];
        let m = geometric_median(&pts, 2, 200);
        assert!(m[0].abs() < 0.5 && m[1].abs() < 0.5, "{m:?}");
        let mean_x = pts.chunks(2).map(|p| p[0]).sum::<f32>() / 5.0;
        assert!(mean_x > 100.0);
    }
}
