//! A contiguous part of a corpus's ids, shared without copying: a 500 MB
//! corpus is held once, however many parts of it a run reads.

use std::ops::{Deref, Range};
use std::sync::Arc;

/// Ids `all[range]`, sharing `all`.
#[derive(Debug, Clone)]
pub struct SharedIds {
    all: Arc<Vec<u8>>,
    range: Range<usize>,
}

impl SharedIds {
    /// All of `all`.
    pub fn whole(all: Arc<Vec<u8>>) -> Self {
        let range = 0..all.len();
        SharedIds { all, range }
    }

    /// The part of `all` that `part` is (a slice borrowed from it, as
    /// [`crate::Split`] makes them).
    ///
    /// Panics when `part` is not inside `all`.
    pub fn part_of(all: &Arc<Vec<u8>>, part: &[u8]) -> Self {
        let base = all.as_ptr() as usize;
        let start = (part.as_ptr() as usize).wrapping_sub(base);
        assert!(
            start <= all.len() && part.len() <= all.len() - start,
            "the part lies inside the ids it shares"
        );
        SharedIds {
            all: all.clone(),
            range: start..start + part.len(),
        }
    }
}

impl Deref for SharedIds {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.all[self.range.clone()]
    }
}

impl From<Vec<u8>> for SharedIds {
    fn from(v: Vec<u8>) -> Self {
        SharedIds::whole(Arc::new(v))
    }
}

impl From<&[u8]> for SharedIds {
    /// A copy of `v`.
    fn from(v: &[u8]) -> Self {
        v.to_vec().into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_share_the_ids() {
        let all = Arc::new((0u8..100).collect::<Vec<_>>());
        let part = SharedIds::part_of(&all, &all[10..20]);
        assert_eq!(&*part, &all[10..20]);
        assert_eq!(Arc::strong_count(&all), 2);
        let empty = SharedIds::part_of(&all, &all[100..]);
        assert!(empty.is_empty());
    }

    #[test]
    #[should_panic(expected = "inside")]
    fn a_slice_from_elsewhere_is_refused() {
        let all = Arc::new(vec![0u8; 10]);
        let other = vec![0u8; 10];
        let _ = SharedIds::part_of(&all, &other);
    }
}
