//! The memory store's table: an open-addressing map from key hashes to entries, laid out so
//! that taking a new key writes only to memory the lookup has just read.
//!
//! Why not `HashMap`: hashbrown keeps its control bytes and its slots in two arrays, so a new
//! key in a large table misses the cache twice — reading the control group, then writing the
//! slot — and the shard lock's release (a locked instruction) stalls until that write lands.
//! Profiles showed that stall as the largest single cost of `begin`. Here a lookup reads one
//! 64-byte line of eight tags and eight slab indices; an insert writes into that same line and
//! appends the entry to a slab that is written in order, so nothing is left outstanding when
//! the lock is released. Lines are also 8 bytes per key, so growing the table moves 8 bytes per
//! key, not the whole entry.

use std::fmt;

use super::KeyHash;

/// Keys per line.
const WIDTH: usize = 8;
/// A lane never used since the table was (re)built: a lookup that sees one can stop.
const EMPTY: u32 = 0;
/// A lane whose key was removed: free for a new key, but a lookup must go on past it.
const DELETED: u32 = 1;
/// Lines a new table starts with.
const INITIAL_LINES: usize = 4;

/// Eight keys' tags and slab indices, in one cache line.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Line {
    tags: [u32; WIDTH],
    slots: [u32; WIDTH],
}

impl Line {
    const EMPTY: Line = Line {
        tags: [EMPTY; WIDTH],
        slots: [0; WIDTH],
    };

    fn has_empty_lane(&self) -> bool {
        self.tags.contains(&EMPTY)
    }
}

/// 32 bits of the key hash that a lookup compares before it reads the slab (never `EMPTY` or
/// `DELETED`). They come from the word that picks the line, above the bits that do, so they
/// still tell keys of one line apart.
fn tag_of(hash: KeyHash) -> u32 {
    ((hash.1 >> 32) as u32).max(DELETED + 1)
}

fn first_line(hash: KeyHash, mask: usize) -> usize {
    hash.1 as usize & mask
}

/// Writes `slot` for `hash` into the first free lane of its probe sequence; returns whether it
/// took an `EMPTY` lane (rather than a `DELETED` one). The key must not be in the table.
fn place(lines: &mut [Line], hash: KeyHash, slot: u32) -> bool {
    let mask = lines.len() - 1;
    let tag = tag_of(hash);
    let mut index = first_line(hash, mask);
    loop {
        let line = &mut lines[index];
        if let Some(lane) = line.tags.iter().position(|&t| t == EMPTY || t == DELETED) {
            let was_empty = line.tags[lane] == EMPTY;
            line.tags[lane] = tag;
            line.slots[lane] = slot;
            return was_empty;
        }
        index = (index + 1) & mask;
    }
}

/// A map from [`KeyHash`] to `V`.
pub(super) struct Table<V> {
    /// A power of two of lines; at most 7/8 of their lanes are in use (live or deleted), so
    /// every probe sequence meets an `EMPTY` lane and ends.
    lines: Vec<Line>,
    /// The entries, where the lines' slot indices point; `None` where one was removed.
    slab: Vec<Option<(KeyHash, V)>>,
    /// Slab indices of removed entries, reused before the slab grows.
    free: Vec<u32>,
    /// Live keys.
    len: usize,
    /// Lanes that are not `EMPTY` (live and deleted).
    used: usize,
}

impl<V> Default for Table<V> {
    fn default() -> Self {
        Table {
            lines: Vec::new(),
            slab: Vec::new(),
            free: Vec::new(),
            len: 0,
            used: 0,
        }
    }
}

impl<V> fmt::Debug for Table<V> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Table")
            .field("len", &self.len)
            .field("lanes", &(self.lines.len() * WIDTH))
            .finish_non_exhaustive()
    }
}

impl<V> Table<V> {
    /// Live keys.
    pub(super) fn len(&self) -> usize {
        self.len
    }

    /// The slab index of `hash`'s entry, and where the line holds it.
    fn find(&self, hash: KeyHash) -> Option<(usize, usize, u32)> {
        if self.lines.is_empty() {
            return None;
        }
        let mask = self.lines.len() - 1;
        let tag = tag_of(hash);
        let mut index = first_line(hash, mask);
        loop {
            let line = &self.lines[index];
            for lane in 0..WIDTH {
                if line.tags[lane] == tag {
                    let slot = line.slots[lane];
                    if matches!(&self.slab[slot as usize], Some((held, _)) if *held == hash) {
                        return Some((index, lane, slot));
                    }
                }
            }
            if line.has_empty_lane() {
                return None;
            }
            index = (index + 1) & mask;
        }
    }

    /// Whether `hash` is held.
    pub(super) fn contains(&self, hash: KeyHash) -> bool {
        self.find(hash).is_some()
    }

    /// `hash`'s entry.
    pub(super) fn get(&self, hash: KeyHash) -> Option<&V> {
        let (_, _, slot) = self.find(hash)?;
        self.slab[slot as usize].as_ref().map(|(_, value)| value)
    }

    /// `hash`'s entry, to change in place.
    pub(super) fn get_mut(&mut self, hash: KeyHash) -> Option<&mut V> {
        let (_, _, slot) = self.find(hash)?;
        self.slab[slot as usize].as_mut().map(|(_, value)| value)
    }

    /// Adds `hash`, which the caller has just looked up and not found.
    ///
    /// # Panics
    /// When one table would hold more than `u32::MAX` entries (the store's per-shard bound
    /// keeps it far below).
    pub(super) fn insert_new(&mut self, hash: KeyHash, value: V) {
        debug_assert!(!self.contains(hash), "insert_new of a key already held");
        if (self.used + 1) * 8 > self.lines.len() * WIDTH * 7 {
            self.rebuild();
        }
        let slot = match self.free.pop() {
            Some(slot) => {
                self.slab[slot as usize] = Some((hash, value));
                slot
            }
            None => {
                let slot = u32::try_from(self.slab.len()).expect("at most u32::MAX entries");
                self.slab.push(Some((hash, value)));
                slot
            }
        };
        if place(&mut self.lines, hash, slot) {
            self.used += 1;
        }
        self.len += 1;
    }

    /// Removes `hash`, returning its entry.
    pub(super) fn remove(&mut self, hash: KeyHash) -> Option<V> {
        let (index, lane, slot) = self.find(hash)?;
        let line = &mut self.lines[index];
        // A line that still has an `EMPTY` lane has had one since the table was built (lanes
        // only become `EMPTY` again here, under this same condition), so no probe ever went
        // past it: the lane can be `EMPTY` again, and lookups keep stopping at this line.
        if line.has_empty_lane() {
            line.tags[lane] = EMPTY;
            self.used -= 1;
        } else {
            line.tags[lane] = DELETED;
        }
        self.free.push(slot);
        self.len -= 1;
        self.slab[slot as usize].take().map(|(_, value)| value)
    }

    /// Keeps the entries for which `keep` says so.
    pub(super) fn retain(&mut self, mut keep: impl FnMut(&KeyHash, &V) -> bool) {
        for slot in 0..self.slab.len() {
            let doomed = match &self.slab[slot] {
                Some((hash, value)) => (!keep(hash, value)).then_some(*hash),
                None => None,
            };
            if let Some(hash) = doomed {
                self.remove(hash);
            }
        }
    }

    /// Rebuilds the lines: at the same size when removals left many `DELETED` lanes, else at
    /// twice the size. Reads the slab in order, so a rebuild costs one pass over the entries
    /// and one write per key.
    fn rebuild(&mut self) {
        let lanes = self.lines.len() * WIDTH;
        let lines = if self.lines.is_empty() {
            INITIAL_LINES
        } else if self.len * 2 < lanes {
            self.lines.len()
        } else {
            self.lines.len() * 2
        };
        self.lines = vec![Line::EMPTY; lines];
        self.used = 0;
        for (slot, entry) in self.slab.iter().enumerate() {
            if let Some((hash, _)) = entry {
                // The slab is never longer than u32::MAX (see `insert_new`).
                if place(&mut self.lines, *hash, slot as u32) {
                    self.used += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    #[test]
    fn a_line_is_one_cache_line() {
        assert_eq!(std::mem::size_of::<Line>(), 64);
        assert_eq!(std::mem::align_of::<Line>(), 64);
    }

    #[test]
    fn keys_that_share_a_line_and_a_tag_are_still_told_apart() {
        let mut table = Table::default();
        // Same second word (same line, same tag), different first words.
        let keys: Vec<KeyHash> = (0..20).map(|i| KeyHash(i, 7 << 32)).collect();
        for (value, key) in keys.iter().enumerate() {
            table.insert_new(*key, value);
        }
        for (value, key) in keys.iter().enumerate() {
            assert_eq!(table.get(*key), Some(&value));
        }
        assert_eq!(table.remove(keys[3]), Some(3));
        assert_eq!(table.get(keys[3]), None);
        assert_eq!(table.get(keys[19]), Some(&19));
        assert_eq!(table.len(), 19);
    }

    #[test]
    fn removing_and_adding_over_and_over_does_not_fill_the_table_with_deleted_lanes() {
        let mut table = Table::default();
        for i in 0..100_000u64 {
            let key = KeyHash(i, i.wrapping_mul(0x9e37_79b9_7f4a_7c15));
            table.insert_new(key, i);
            if i >= 10 {
                let old = i - 10;
                let old_key = KeyHash(old, old.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                assert_eq!(table.remove(old_key), Some(old));
            }
        }
        assert_eq!(table.len(), 10);
        assert!(table.lines.len() <= 64, "{} lines", table.lines.len());
        assert!(table.slab.len() <= 64, "{} slab entries", table.slab.len());
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert(u8, u32),
        Remove(u8),
        Update(u8, u32),
        RetainEven,
    }

    /// Few distinct first words and tags, so lines, tags and probe sequences collide a lot.
    fn key(id: u8) -> KeyHash {
        KeyHash(u64::from(id), (u64::from(id % 5) << 32) | u64::from(id % 3))
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Insert(k, v)),
            3 => any::<u8>().prop_map(Op::Remove),
            2 => (any::<u8>(), any::<u32>()).prop_map(|(k, v)| Op::Update(k, v)),
            1 => Just(Op::RetainEven),
        ]
    }

    proptest! {
        #[test]
        fn behaves_like_a_hash_map(ops in prop::collection::vec(op(), 1..400)) {
            let mut table = Table::default();
            let mut model: HashMap<u8, u32> = HashMap::new();
            for op in ops {
                match op {
                    Op::Insert(k, v) => {
                        if table.get(key(k)).is_none() {
                            table.insert_new(key(k), v);
                            model.insert(k, v);
                        }
                    }
                    Op::Remove(k) => prop_assert_eq!(table.remove(key(k)), model.remove(&k)),
                    Op::Update(k, v) => {
                        if let Some(held) = table.get_mut(key(k)) {
                            *held = v;
                        }
                        if let Some(held) = model.get_mut(&k) {
                            *held = v;
                        }
                    }
                    Op::RetainEven => {
                        table.retain(|_, v| *v % 2 == 0);
                        model.retain(|_, v| *v % 2 == 0);
                    }
                }
                prop_assert_eq!(table.len(), model.len());
                prop_assert!(table.used * 8 <= table.lines.len() * WIDTH * 7);
            }
            for k in 0..=u8::MAX {
                prop_assert_eq!(table.get(key(k)), model.get(&k));
                prop_assert_eq!(table.contains(key(k)), model.contains_key(&k));
            }
        }
    }
}
