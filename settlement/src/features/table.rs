//! Bounded per-entity state: a table of at most `capacity_max` entries (accounts, games,
//! sessions, rounds, providers, providers' reconciliation breaks) keyed by a 64-bit hash of
//! the entity's identifier.
//!
//! Why hashes and not the identifiers: a key is 8 bytes instead of a heap string, so a new
//! entity costs no allocation once the table has reached its limit, and the table's memory
//! is a fixed number of bytes per entry. Two distinct identifiers share state only if their
//! 64-bit hashes collide: with 1,000,000 live accounts that probability is about 3·10⁻⁸.
//!
//! Eviction is CLOCK (second chance), an O(1) amortised approximation of least recently
//! seen: each slot has a reference bit, set on every hit. When the table is full, a hand
//! sweeps the slots, clearing set bits, and evicts the first slot whose bit was clear, i.e.
//! an entity not seen since the hand last passed. Each sweep step clears a bit that a hit
//! set, so a lookup does O(1) work amortised. An evicted entity that comes back starts from
//! fresh state (and counts as first seen again).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// FNV-1a over the bytes, then a SplitMix64 finaliser so the low bits the hash table uses
/// are well mixed. Stable across processes and builds (training and serving agree).
pub(crate) struct KeyHasher(u64);

impl KeyHasher {
    const OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;

    pub(crate) fn new(domain: u8) -> KeyHasher {
        let mut hasher = KeyHasher(Self::OFFSET);
        hasher.bytes(&[domain]);
        hasher
    }

    /// Adds one field, length-prefixed so `("ab", "c")` and `("a", "bc")` differ.
    pub(crate) fn field(mut self, text: &str) -> KeyHasher {
        self.bytes(&(text.len() as u32).to_le_bytes());
        self.bytes(text.as_bytes());
        self
    }

    fn bytes(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.0 ^= byte as u64;
            self.0 = self.0.wrapping_mul(Self::PRIME);
        }
    }

    pub(crate) fn finish(self) -> u64 {
        let mut z = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
}

/// The index's hasher: keys are already well-mixed 64-bit hashes, used as they are.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only `write_u64` is used by `u64` keys; fold anything else in for completeness.
        for &byte in bytes {
            self.0 = self.0.rotate_left(8) ^ byte as u64;
        }
    }
    fn write_u64(&mut self, value: u64) {
        self.0 = value;
    }
}

/// What a lookup found.
pub(crate) struct Entry<'a, S> {
    pub state: &'a mut S,
    /// The entity was not in the table (never seen, or evicted since).
    pub first_seen: bool,
}

pub(crate) struct EntityTable<S> {
    index: HashMap<u64, u32, BuildHasherDefault<IdentityHasher>>,
    keys: Vec<u64>,
    states: Vec<S>,
    referenced: Vec<bool>,
    hand: usize,
    capacity_max: usize,
    evictions: u64,
    /// Keys placed in slots so far: while it is unchanged, every key is in the slot it was
    /// found in (see [`EntityTable::find_slot`]).
    placements: u64,
    /// The index's largest capacity so far: its bucket array never shrinks, while
    /// `capacity()` dips as evictions leave tombstones.
    index_capacity_peak: usize,
}

impl<S: Default> EntityTable<S> {
    /// A table of at most `capacity_max` entries (at least 1, at most `u32::MAX`).
    pub(crate) fn new(capacity_max: usize) -> EntityTable<S> {
        EntityTable {
            index: HashMap::default(),
            keys: Vec::new(),
            states: Vec::new(),
            referenced: Vec::new(),
            hand: 0,
            capacity_max: capacity_max.clamp(1, u32::MAX as usize),
            evictions: 0,
            placements: 0,
            index_capacity_peak: 0,
        }
    }

    /// The entity's state, created (with `S::default()`) if absent; may evict another.
    pub(crate) fn get_or_insert(&mut self, key: u64) -> Entry<'_, S> {
        if let Some(&slot) = self.index.get(&key) {
            let slot = slot as usize;
            self.referenced[slot] = true;
            return Entry { state: &mut self.states[slot], first_seen: false };
        }
        let slot = if self.keys.len() < self.capacity_max {
            self.grow();
            self.keys.push(key);
            self.states.push(S::default());
            self.referenced.push(true);
            self.keys.len() - 1
        } else {
            let slot = self.victim();
            self.index.remove(&self.keys[slot]);
            self.evictions += 1;
            self.keys[slot] = key;
            self.states[slot] = S::default();
            self.referenced[slot] = true;
            slot
        };
        self.index.insert(key, slot as u32);
        self.placements += 1;
        self.index_capacity_peak = self.index_capacity_peak.max(self.index.capacity());
        Entry { state: &mut self.states[slot], first_seen: true }
    }

    /// The state of an entity, if present, marking it seen (nothing created).
    pub(crate) fn find(&mut self, key: u64) -> Option<&mut S> {
        let slot = *self.index.get(&key)? as usize;
        self.referenced[slot] = true;
        Some(&mut self.states[slot])
    }

    /// The slot of an entity, if present, marking it seen (nothing created): for a caller
    /// that keeps it with [`EntityTable::placements`] and later reads the state through
    /// [`EntityTable::at_slot`] while the placements are unchanged, without a lookup.
    pub(crate) fn find_slot(&mut self, key: u64) -> Option<u32> {
        let slot = *self.index.get(&key)?;
        self.referenced[slot as usize] = true;
        Some(slot)
    }

    /// How many keys have been placed in slots; a slot found before still holds the same
    /// key as long as this has not changed.
    pub(crate) fn placements(&self) -> u64 {
        self.placements
    }

    /// The state in a slot found by [`EntityTable::find_slot`] with the current
    /// placements, marking it seen, as a lookup of its key would.
    pub(crate) fn at_slot(&mut self, slot: u32) -> &mut S {
        self.referenced[slot as usize] = true;
        &mut self.states[slot as usize]
    }

    /// Every entity's state, in no particular order.
    pub(crate) fn states(&self) -> impl Iterator<Item = &S> {
        self.states.iter()
    }

    /// The state of an entity, if present (no reference bit set, nothing created).
    #[cfg(test)]
    pub(crate) fn get(&self, key: u64) -> Option<&S> {
        self.index.get(&key).map(|&slot| &self.states[slot as usize])
    }

    /// Grows the slot vectors by doubling, but never past `capacity_max`; once the table is
    /// full, makes room in the index for twice the entries, so that the tombstones left by
    /// evictions are cleared by rehashing in place instead of growing the index again.
    fn grow(&mut self) {
        let len = self.keys.len();
        if len == self.keys.capacity() {
            let additional = len.max(64).min(self.capacity_max - len);
            self.keys.reserve_exact(additional);
            self.states.reserve_exact(additional);
            self.referenced.reserve_exact(additional);
        }
        if len + 1 == self.capacity_max {
            self.index.reserve(self.capacity_max + 1);
        }
    }

    /// CLOCK: the first slot from the hand whose reference bit is clear, clearing bits on
    /// the way. Terminates within two turns, since every bit passed is cleared.
    fn victim(&mut self) -> usize {
        loop {
            let slot = self.hand;
            self.hand = (self.hand + 1) % self.keys.len();
            if self.referenced[slot] {
                self.referenced[slot] = false;
            } else {
                return slot;
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.keys.len()
    }

    pub(crate) fn evictions(&self) -> u64 {
        self.evictions
    }

    /// Bytes held, estimated from capacities: the slot vectors plus the index, a SwissTable
    /// of a power-of-two number of buckets (at most 7/8 full), each a `(u64, u32)` pair and
    /// one control byte.
    pub(crate) fn memory_bytes(&self) -> usize {
        let buckets = if self.index_capacity_peak == 0 {
            0
        } else {
            (self.index_capacity_peak * 8).div_ceil(7).next_power_of_two()
        };
        self.keys.capacity() * std::mem::size_of::<u64>()
            + self.states.capacity() * std::mem::size_of::<S>()
            + self.referenced.capacity()
            + buckets * (std::mem::size_of::<(u64, u32)>() + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_stable_and_fields_are_separated() {
        let a = KeyHasher::new(1).field("ab").field("c").finish();
        let b = KeyHasher::new(1).field("a").field("bc").finish();
        assert_ne!(a, b);
        assert_ne!(KeyHasher::new(1).field("x").finish(), KeyHasher::new(2).field("x").finish());
        // Pinned: training and serving in different processes must agree on keys.
        assert_eq!(KeyHasher::new(0).field("acct-1").finish(), 5_770_637_269_211_568_009);
    }

    #[test]
    fn a_found_slot_holds_its_key_until_the_placements_change() {
        let mut table: EntityTable<u32> = EntityTable::new(2);
        assert_eq!((table.find_slot(1), table.placements()), (None, 0));
        *table.get_or_insert(1).state = 11;
        *table.get_or_insert(2).state = 22;
        let (slot, placements) = (table.find_slot(1).expect("present"), table.placements());
        assert_eq!(placements, 2);
        // Hits place nothing; the slot still reads key 1's state and marks it seen.
        assert!(!table.get_or_insert(2).first_seen);
        assert_eq!((table.placements(), *table.at_slot(slot)), (placements, 11));
        // Key 1 was marked seen through its slot, so the eviction passes over it once and
        // then, all bits clear, takes slot 0 (key 1): the placements change with it.
        assert!(table.get_or_insert(3).first_seen);
        assert_eq!(table.placements(), placements + 1);
        assert_eq!(table.find_slot(1), None);
        assert_eq!(*table.at_slot(slot), 0, "the slot now holds key 3's fresh state");
    }

    #[test]
    fn a_full_table_evicts_an_entry_not_seen_since_the_last_sweep() {
        let mut table: EntityTable<u32> = EntityTable::new(3);
        for key in 1..=3 {
            assert!(table.get_or_insert(key).first_seen);
        }
        // The first insert beyond the limit sweeps all bits clear and evicts slot 0 (key 1).
        assert!(table.get_or_insert(4).first_seen);
        assert!(table.get(1).is_none());
        // Key 2 is seen again, so the next eviction passes over it and takes key 3.
        *table.get_or_insert(2).state = 22;
        assert!(!table.get_or_insert(2).first_seen);
        assert!(table.get_or_insert(5).first_seen);
        assert!(table.get(3).is_none());
        assert_eq!(table.get(2), Some(&22));
        assert_eq!(table.len(), 3);
        assert_eq!(table.evictions(), 2);
    }
}
