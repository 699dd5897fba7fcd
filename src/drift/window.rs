//! The last rows' bin indices, bounded in rows and in age, with each column's bin counts kept
//! current as rows come and go: memory stays `rows × columns` small integers whatever the
//! traffic, and the counts a PSI needs are always at hand.

use std::{collections::VecDeque, time::Duration};

use tokio::time::Instant;

/// A row's column with no bin (a missing value).
pub(crate) const NO_BIN: u16 = u16::MAX;

pub(crate) struct Window {
    /// Bins per column, in the order the counts are kept.
    bins: Vec<usize>,
    max_rows: usize,
    max_age: Duration,
    /// Row-major bin indices of the rows in the window, oldest first.
    rows: VecDeque<u16>,
    /// When each group of rows arrived, oldest first, and how many rows it still has.
    arrivals: VecDeque<(Instant, usize)>,
    /// Per column, per bin: rows of the window in that bin.
    counts: Vec<Vec<u32>>,
    /// Per column: rows of the window with a bin (not missing).
    present: Vec<u32>,
}

impl Window {
    /// A window over columns with `bins[c]` bins each.
    pub(crate) fn new(bins: Vec<usize>, max_rows: usize, max_age: Duration) -> Window {
        Window {
            counts: bins.iter().map(|&n| vec![0; n]).collect(),
            present: vec![0; bins.len()],
            bins,
            max_rows: max_rows.max(1),
            max_age,
            rows: VecDeque::new(),
            arrivals: VecDeque::new(),
        }
    }

    fn columns(&self) -> usize {
        self.bins.len()
    }

    /// Rows in the window.
    pub(crate) fn len(&self) -> usize {
        self.rows.len() / self.columns().max(1)
    }

    /// Adds rows that arrived at `now` (row-major, one bin index or [`NO_BIN`] per column), then
    /// drops rows older than the window's age and the oldest beyond its size.
    pub(crate) fn push(&mut self, rows: &[u16], now: Instant) {
        let columns = self.columns();
        if columns == 0 || rows.is_empty() {
            return;
        }
        for row in rows.chunks_exact(columns) {
            for (column, &bin) in row.iter().enumerate() {
                if bin != NO_BIN {
                    self.counts[column][usize::from(bin)] += 1;
                    self.present[column] += 1;
                }
            }
        }
        self.rows.extend(rows);
        self.arrivals.push_back((now, rows.len() / columns));
        self.expire(now);
    }

    /// Drops rows older than the window's age as of `now`, then the oldest beyond its size.
    pub(crate) fn expire(&mut self, now: Instant) {
        while let Some(&(arrived, count)) = self.arrivals.front() {
            if now.saturating_duration_since(arrived) <= self.max_age {
                break;
            }
            self.drop_oldest(count);
        }
        let excess = self.len().saturating_sub(self.max_rows);
        self.drop_oldest(excess);
    }

    fn drop_oldest(&mut self, mut count: usize) {
        let columns = self.columns();
        while count > 0 {
            let Some((_, group)) = self.arrivals.front_mut() else {
                return;
            };
            let take = count.min(*group);
            for (index, bin) in self.rows.drain(..take * columns).enumerate() {
                if bin != NO_BIN {
                    let column = index % columns;
                    self.counts[column][usize::from(bin)] -= 1;
                    self.present[column] -= 1;
                }
            }
            *group -= take;
            count -= take;
            if *group == 0 {
                self.arrivals.pop_front();
            }
        }
    }

    /// Column `column`'s rows per bin, and how many rows had a bin.
    pub(crate) fn counts(&self, column: usize) -> (&[u32], u32) {
        (&self.counts[column], self.present[column])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: u64) -> Instant {
        // A fixed origin: only differences matter.
        static ORIGIN: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
        *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(seconds)
    }

    #[test]
    fn counts_follow_rows_in_and_out_of_a_window_of_rows() {
        let mut window = Window::new(vec![3, 2], 3, Duration::from_secs(900));
        window.push(&[0, 1, 2, 0], at(0));
        window.push(&[2, NO_BIN, 1, 1], at(1));
        assert_eq!(window.len(), 3, "four rows in, the oldest gone");
        assert_eq!(window.counts(0), (&[0, 1, 2][..], 3));
        assert_eq!(
            window.counts(1),
            (&[1, 1][..], 2),
            "a missing value has no bin"
        );
    }

    #[test]
    fn rows_older_than_the_window_leave_it() {
        let mut window = Window::new(vec![2], 100, Duration::from_secs(60));
        window.push(&[0, 0, 0], at(0));
        window.push(&[1], at(30));
        window.expire(at(60));
        assert_eq!(window.counts(0), (&[3, 1][..], 4), "60 s old is still in");
        window.expire(at(61));
        assert_eq!(window.counts(0), (&[0, 1][..], 1));
        window.expire(at(1000));
        assert_eq!((window.len(), window.counts(0).1), (0, 0));
    }
}
