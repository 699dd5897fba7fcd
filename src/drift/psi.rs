//! The population stability index of a window's bin counts against a reference distribution.
//!
//! `PSI = Σ (aᵢ − eᵢ) · ln(aᵢ / eᵢ)` over the bins, with `a` the window's shares and `e` the
//! reference's. A bin empty on either side would make it infinite, so both sides are smoothed
//! by adding half a row to every bin (Jeffreys' prior): `aᵢ = (cᵢ + ½) / (n + ½·B)`, and the
//! reference likewise with the rows its shares were computed from. Read it as the usual rule of
//! thumb: below 0.1 stable, 0.1 to 0.2 a moderate shift, above 0.2 a significant one.

/// The PSI of `counts` (the window's rows per bin, `present` of them in all) against the
/// reference's `fractions`, computed from `reference_rows` rows. `None` for an empty window.
pub(crate) fn psi(
    fractions: &[f64],
    reference_rows: f64,
    counts: &[u32],
    present: u32,
) -> Option<f64> {
    if present == 0 || fractions.len() != counts.len() || fractions.is_empty() {
        return None;
    }
    let half_rows = 0.5 * fractions.len() as f64;
    let present = f64::from(present);
    let reference_rows = reference_rows.max(1.0);
    let index = fractions
        .iter()
        .zip(counts)
        .map(|(&fraction, &count)| {
            let expected = (fraction * reference_rows + 0.5) / (reference_rows + half_rows);
            let actual = (f64::from(count) + 0.5) / (present + half_rows);
            (actual - expected) * (actual / expected).ln()
        })
        .sum();
    Some(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_distribution_scores_near_zero_and_a_shift_high() {
        let reference = [0.25; 4];
        let same = psi(&reference, 10_000.0, &[2500, 2500, 2500, 2500], 10_000).unwrap();
        assert!(same.abs() < 1e-9, "{same}");
        let shifted = psi(&reference, 10_000.0, &[0, 0, 5000, 5000], 10_000).unwrap();
        assert!(shifted > 2.0, "{shifted}");
        assert_eq!(psi(&reference, 10_000.0, &[0; 4], 0), None);
    }

    #[test]
    fn it_matches_the_textbook_formula_on_smoothed_shares() {
        // Two bins, reference 0.5/0.5 from 100 rows, window 30/70 of 100 rows.
        let expected: f64 = [(30.5 / 101.0, 50.5 / 101.0), (70.5 / 101.0, 50.5 / 101.0)]
            .iter()
            .map(|(a, e): &(f64, f64)| (a - e) * (a / e).ln())
            .sum();
        let found = psi(&[0.5, 0.5], 100.0, &[30, 70], 100).unwrap();
        assert!((found - expected).abs() < 1e-12, "{found} {expected}");
    }
}
