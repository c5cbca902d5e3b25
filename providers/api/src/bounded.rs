//! [`BoundedSet`]: remembers the most recent keys, forgets the oldest.

use std::{
    collections::{HashSet, VecDeque},
    hash::Hash,
};

/// A set that keeps at most `max` keys, forgetting the oldest first.
///
/// For "seen already" bookkeeping that must not grow without bound in a
/// long-running process: Events recorded once, pods removed once.
#[derive(Clone, Debug)]
pub struct BoundedSet<K> {
    set: HashSet<K>,
    order: VecDeque<K>,
    max: usize,
}

impl<K: Clone + Eq + Hash> BoundedSet<K> {
    /// An empty set that keeps at most `max` keys (at least one).
    pub fn new(max: usize) -> Self {
        Self {
            set: HashSet::new(),
            order: VecDeque::new(),
            max: max.max(1),
        }
    }

    /// Adds `key`; returns whether it was new. When the set is full, the
    /// oldest key is forgotten.
    pub fn insert(&mut self, key: K) -> bool {
        if !self.set.insert(key.clone()) {
            return false;
        }
        self.order.push_back(key);
        while self.order.len() > self.max {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }

    /// Whether `key` is remembered.
    pub fn contains<Q>(&self, key: &Q) -> bool
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.set.contains(key)
    }

    /// How many keys are remembered.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether no key is remembered.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_keys() {
        let mut s = BoundedSet::new(3);
        assert!(s.insert("a".to_owned()));
        assert!(!s.insert("a".to_owned()), "a repeat is not new");
        for k in ["b", "c", "d"] {
            assert!(s.insert(k.to_owned()));
        }
        assert!(!s.contains("a") && s.contains("b") && s.contains("d"));
        assert_eq!(s.len(), 3);
        assert!(s.insert("a".to_owned()), "a forgotten key is new again");
    }
}
