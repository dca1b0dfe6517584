//! String interning and a fast hasher for the snapshot's indexes.
//!
//! Label keys and values, namespaces, taint keys and resource names are
//! turned into small integers once, when a node or pod enters the snapshot,
//! so the per-node work of a scheduling cycle compares integers, not strings.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

/// An interned string. Only meaningful with the [`Interner`] that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct Sym(pub(crate) u32);

/// rustc's FxHash: one multiply per word. The keys hashed here are small
/// integers and short strings from our own snapshot, so there is no
/// hash-flooding concern that would call for SipHash.
#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct FxHasher {
    hash: u64,
}

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FxHasher {
    #[inline]
    fn add(&mut self, word: u64) {
        self.hash = (self.hash.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.add(u64::from(i));
    }

    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.add(i);
    }

    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.add(i as u64);
    }

    #[inline]
    fn finish(&self) -> u64 {
        self.hash
    }
}

pub(crate) type FxBuild = BuildHasherDefault<FxHasher>;
pub(crate) type FxHashMap<K, V> = HashMap<K, V, FxBuild>;

/// A well-mixed 64-bit hash of a string (for tie-breaking, not indexing).
pub(crate) fn hash_str(s: &str) -> u64 {
    let mut h = FxHasher::default();
    h.write(s.as_bytes());
    mix(h.finish() ^ s.len() as u64)
}

/// SplitMix64's finaliser: spreads every input bit over the output.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Strings to [`Sym`]s and back, with each string's integer value cached
/// for the `Gt` / `Lt` node selector operators.
#[derive(Debug, Clone, Default)]
pub(crate) struct Interner {
    map: FxHashMap<Arc<str>, Sym>,
    strings: Vec<Arc<str>>,
    numbers: Vec<Option<i64>>,
}

impl Interner {
    pub(crate) fn intern(&mut self, s: &str) -> Sym {
        if let Some(&sym) = self.map.get(s) {
            return sym;
        }
        let sym = Sym(u32::try_from(self.strings.len()).expect("fewer than 2^32 strings"));
        let shared: Arc<str> = Arc::from(s);
        self.map.insert(shared.clone(), sym);
        self.strings.push(shared);
        self.numbers.push(s.parse().ok());
        sym
    }

    pub(crate) fn get(&self, s: &str) -> Option<Sym> {
        self.map.get(s).copied()
    }

    pub(crate) fn len(&self) -> usize {
        self.strings.len()
    }

    /// The string behind a symbol. Symbols from a [`Lookup`] that were not
    /// interned resolve to the empty string.
    pub(crate) fn resolve(&self, sym: Sym) -> &Arc<str> {
        static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
        self.strings
            .get(sym.0 as usize)
            .unwrap_or_else(|| EMPTY.get_or_init(|| Arc::from("")))
    }

    /// The symbol's string read as a base-10 integer, as `Gt` / `Lt` read
    /// label values.
    pub(crate) fn number(&self, sym: Sym) -> Option<i64> {
        self.numbers.get(sym.0 as usize).copied().flatten()
    }
}

/// Symbols for one incoming pod, looked up without changing the interner.
///
/// A string the snapshot has never seen gets a fresh symbol above the
/// interner's range: it matches nothing in the snapshot, and two different
/// unseen strings still compare unequal (a pod's own labels against its own
/// selectors).
pub(crate) trait Symbols {
    fn sym(&mut self, s: &str) -> Sym;

    /// How many strings so far were not in the interner.
    fn unseen(&self) -> usize {
        0
    }
}

impl Symbols for Interner {
    fn sym(&mut self, s: &str) -> Sym {
        self.intern(s)
    }
}

pub(crate) struct Lookup<'a> {
    interner: &'a Interner,
    unseen: FxHashMap<String, Sym>,
}

impl<'a> Lookup<'a> {
    pub(crate) fn new(interner: &'a Interner) -> Self {
        Lookup {
            interner,
            unseen: FxHashMap::default(),
        }
    }
}

impl Symbols for Lookup<'_> {
    fn sym(&mut self, s: &str) -> Sym {
        if let Some(sym) = self.interner.get(s) {
            return sym;
        }
        let next = Sym((self.interner.len() + self.unseen.len()) as u32);
        *self.unseen.entry(s.to_owned()).or_insert(next)
    }

    fn unseen(&self) -> usize {
        self.unseen.len()
    }
}
