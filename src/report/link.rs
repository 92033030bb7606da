//! Linkage: records into persons (DESIGN.md, "Linking records into
//! persons"; the rules and their reasons are in docs/linkage.md).
//!
//! A person is a connected component of the graph whose nodes are records
//! and whose edges join records that share a match key. Records are held
//! compactly (a few bytes of codes each), keys are sorted, equal neighbours
//! are united in a union-find, and each component's attributes are
//! resolved by the conflict rules.

use std::sync::atomic::AtomicU32;
use std::sync::atomic::Ordering::Relaxed;

use rayon::prelude::*;

/// One form's records, column by column, as codes.
///
/// "Latest" orders records by month, then by the ledger order of their
/// drop, then by their record key. The record key itself is not held: the
/// reader puts the records of each drop and month in record-key order, and
/// the position of a record is the last tie-break.
#[derive(Debug, Default)]
pub struct Records {
    /// First 128 bits of the `passport` key (0: none).
    pub key_passport: Vec<u128>,
    /// First 128 bits of the `name_dob` key (0: none).
    pub key_name_dob: Vec<u128>,
    /// Month of the event, as months since year 0.
    pub month: Vec<u32>,
    /// Ledger sequence number of the record's drop.
    pub drop_seq: Vec<u32>,
    /// Index of the record's organisation (in the caller's list).
    pub org: Vec<u16>,
    /// The record's row in its drop (0 for the first), so that a link can
    /// be traced back to the NGO's input row; empty when the reader was
    /// not asked for it.
    pub pos: Vec<u32>,
    /// Attribute columns per record.
    pub width: usize,
    /// Attribute codes, record after record (`width` a record, so that
    /// the attributes of one record share a cache line); 0 is unknown.
    pub codes: Vec<u8>,
}

impl Records {
    /// Records with `attrs` attribute columns.
    pub fn with_attrs(attrs: usize) -> Self {
        Self::with_capacity(attrs, 0)
    }

    /// Records with `attrs` attribute columns and room for `n` records.
    pub fn with_capacity(attrs: usize, n: usize) -> Self {
        Records {
            key_passport: Vec::with_capacity(n),
            key_name_dob: Vec::with_capacity(n),
            month: Vec::with_capacity(n),
            drop_seq: Vec::with_capacity(n),
            org: Vec::with_capacity(n),
            pos: Vec::with_capacity(n),
            width: attrs,
            codes: Vec::with_capacity(n * attrs),
        }
    }

    /// The attribute codes of record `i`.
    pub fn row(&self, i: usize) -> &[u8] {
        &self.codes[i * self.width..(i + 1) * self.width]
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.month.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.month.is_empty()
    }

    /// Appends `other`'s records after these.
    pub fn append(&mut self, other: &Records) {
        self.key_passport.extend_from_slice(&other.key_passport);
        self.key_name_dob.extend_from_slice(&other.key_name_dob);
        self.month.extend_from_slice(&other.month);
        self.drop_seq.extend_from_slice(&other.drop_seq);
        self.org.extend_from_slice(&other.org);
        self.pos.extend_from_slice(&other.pos);
        assert_eq!(self.width, other.width, "records of one form");
        self.codes.extend_from_slice(&other.codes);
    }

    /// These records reordered: record `order[k]` becomes record `k`.
    pub fn permuted(&self, order: &[u32]) -> Records {
        fn take<T: Copy>(v: &[T], order: &[u32]) -> Vec<T> {
            order.iter().map(|&i| v[i as usize]).collect()
        }
        Records {
            key_passport: take(&self.key_passport, order),
            key_name_dob: take(&self.key_name_dob, order),
            month: take(&self.month, order),
            drop_seq: take(&self.drop_seq, order),
            org: take(&self.org, order),
            pos: take(&self.pos, order),
            width: self.width,
            codes: order
                .iter()
                .flat_map(|&i| self.row(i as usize))
                .copied()
                .collect(),
        }
    }
}

/// Record indices from earliest to latest: by month, then drop, then
/// position. Records are read drop by drop, so they come in long runs of
/// one month and drop: the runs are found and sorted, not the records,
/// and both the finding and the writing out are done in parallel.
fn recency_order(month: &[u32], drop_seq: &[u32]) -> Vec<u32> {
    let n = month.len();
    let step = 1 << 16;
    // Where a run starts: 0 and every record unlike the one before it.
    let mut starts: Vec<usize> = (0..n.div_ceil(step))
        .into_par_iter()
        .flat_map_iter(|c| {
            let (a, b) = (c * step, ((c + 1) * step).min(n));
            (a..b).filter(|&i| i == 0 || month[i] != month[i - 1] || drop_seq[i] != drop_seq[i - 1])
        })
        .collect();
    starts.push(n);
    let mut runs: Vec<(u32, u32, usize, usize)> = starts
        .windows(2)
        .map(|w| (month[w[0]], drop_seq[w[0]], w[0], w[1]))
        .collect();
    runs.sort_unstable();
    let mut order = vec![0u32; n];
    // Each run's place in the order: right after the run before it.
    let mut at = 0;
    let places = runs.iter().map(|&(_, _, a, b)| {
        at += b - a;
        at - (b - a)..at
    });
    runs.par_iter()
        .zip(run_pieces(&mut order, 0, places))
        .for_each(|(&(_, _, a, _), out)| {
            for (j, slot) in out.iter_mut().enumerate() {
                *slot = (a + j) as u32;
            }
        });
    order
}

/// Splits `s`, whose first item is item `base` (a record, a block's
/// member, a rank), into the pieces of `runs` (ascending and apart), one a run.
pub(crate) fn run_pieces<T>(
    mut s: &mut [T],
    base: usize,
    runs: impl Iterator<Item = std::ops::Range<usize>>,
) -> Vec<&mut [T]> {
    let mut at = base;
    let mut out = Vec::new();
    for r in runs {
        let (_, rest) = std::mem::take(&mut s).split_at_mut(r.start - at);
        let (piece, rest) = rest.split_at_mut(r.end - r.start);
        out.push(piece);
        s = rest;
        at = r.end;
    }
    out
}

/// How many items ahead of the one worked on [`prefetch`] is asked for.
pub(crate) const AHEAD: usize = 8;

/// Asks the processor to bring `s[i]` into its cache, when it is there to
/// bring. Work that jumps between records scattered over hundreds of
/// megabytes waits on memory, not on arithmetic: fetching the records a
/// few items ahead lets those waits overlap.
#[inline]
pub(crate) fn prefetch<T>(s: &[T], i: usize) {
    if i < s.len() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: a prefetch only hints the cache; it reads nothing and
        // cannot fault, whatever the address (this one is in `s`). SSE,
        // which has the instruction, is part of every x86-64 processor.
        unsafe {
            use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
            _mm_prefetch::<_MM_HINT_T0>(s.as_ptr().add(i).cast::<i8>());
        }
    }
}

/// A plain union-find (union by rank, path halving): the reference the
/// tests check [`Forest`] against.
#[cfg(test)]
pub(crate) struct UnionFind {
    parent: Vec<u32>,
    rank: Vec<u8>,
}

#[cfg(test)]
impl UnionFind {
    pub(crate) fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
            rank: vec![0; n],
        }
    }

    pub(crate) fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }

    pub(crate) fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.rank[a as usize] < self.rank[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        if self.rank[a as usize] == self.rank[b as usize] {
            self.rank[a as usize] += 1;
        }
    }
}

/// A union-find over `0..n` that threads can unite in at once: each
/// element's parent is an atomic word, a link is made by a
/// compare-and-swap on a root, and the larger of two roots is always put
/// under the smaller, so that every component's root is its smallest
/// element. Finds halve their paths (each step points an element at its
/// grandparent, an ancestor still): no union by rank, which components of
/// a few records do not need.
pub(crate) struct Forest {
    parent: Vec<AtomicU32>,
}

impl Forest {
    pub(crate) fn new(n: usize) -> Self {
        assert!(n <= u32::MAX as usize, "record indices are 32-bit");
        Forest {
            parent: (0..n as u32).into_par_iter().map(AtomicU32::new).collect(),
        }
    }

    /// The root of `x`'s component.
    pub(crate) fn find(&self, mut x: u32) -> u32 {
        loop {
            let p = self.parent[x as usize].load(Relaxed);
            if p == x {
                return x;
            }
            let g = self.parent[p as usize].load(Relaxed);
            if g != p {
                self.parent[x as usize].store(g, Relaxed);
            }
            x = g;
        }
    }

    /// Puts `a` and `b` in one component; safe to call from many threads.
    pub(crate) fn union(&self, a: u32, b: u32) {
        let (mut a, mut b) = (a, b);
        loop {
            a = self.find(a);
            b = self.find(b);
            if a == b {
                return;
            }
            let (lo, hi) = if a < b { (a, b) } else { (b, a) };
            // Only a root is linked: if `hi` was linked meanwhile, its new
            // root is found on the next round.
            if self.parent[hi as usize]
                .compare_exchange(hi, lo, Relaxed, Relaxed)
                .is_ok()
            {
                return;
            }
        }
    }

    /// Unites the elements whose `keys` are equal (0 is no key): element
    /// `r` is record `order[r]` when an order is given, else record `r`.
    /// What each key reads is prefetched ([`Forest::unite_equal`]).
    pub(crate) fn unite_keys(&self, keys: &[u128], order: Option<&[u32]>, words: &mut Vec<u64>) {
        match order {
            Some(order) => self.unite_equal(
                |r| keys[order[r] as usize],
                |r, far| {
                    if far {
                        prefetch(order, r);
                    } else {
                        prefetch(keys, order[r] as usize);
                    }
                },
                words,
            ),
            None => self.unite_equal(
                |i| keys[i],
                |i, far| {
                    if !far {
                        prefetch(keys, i);
                    }
                },
                words,
            ),
        }
    }

    /// Unites the elements whose keys `key` are equal (0 is no key), in
    /// parallel. `words` is room for the sort, kept for the next key.
    ///
    /// The words are sorted by the keys' first bits only; each run of
    /// equal first bits is united with its first element where the whole
    /// keys are equal, and the rare run whose whole keys differ is then
    /// sorted by whole key and its equal neighbours united.
    ///
    /// `ahead(element, far)` is called on the elements of runs a little
    /// ahead of the one united, to [`prefetch`] what `key` reads of them:
    /// with `far` further ahead, then without it.
    pub(crate) fn unite_equal(
        &self,
        key: impl Fn(usize) -> u128 + Sync,
        ahead: impl Fn(usize, bool) + Sync,
        words: &mut Vec<u64>,
    ) {
        let order =
            KeyOrder::by_first_bits(std::mem::take(words), self.parent.len(), &key, |_| true);
        let (w, bits) = (&order.words, order.bits);
        // Stretches of runs, one per task, cut where a run starts.
        let parts = 4 * rayon::current_num_threads();
        let mut cuts = vec![0];
        for p in 1..parts {
            let mut c = (w.len() * p / parts).max(cuts[cuts.len() - 1]);
            while c > 0 && c < w.len() && w[c] >> bits == w[c - 1] >> bits {
                c += 1;
            }
            cuts.push(c);
        }
        cuts.push(w.len());
        cuts.par_windows(2).for_each(|c| {
            let s = &w[c[0]..c[1]];
            let mut odd: Vec<(u128, u32)> = Vec::new();
            let mut i = 0;
            // Words up to which `ahead` was called, far and near.
            let (mut far, mut near) = (0, 0);
            let shared = |q: usize| {
                (q > 0 && s[q] >> bits == s[q - 1] >> bits)
                    || (q + 1 < s.len() && s[q] >> bits == s[q + 1] >> bits)
            };
            while i < s.len() {
                while far < (i + 2 * AHEAD).min(s.len()) {
                    if shared(far) {
                        ahead(order.index(s[far]), true);
                    }
                    far += 1;
                }
                while near < (i + AHEAD).min(s.len()) {
                    if shared(near) {
                        let x = order.index(s[near]);
                        ahead(x, false);
                        prefetch(&self.parent, x);
                    }
                    near += 1;
                }
                let mut j = i + 1;
                while j < s.len() && s[j] >> bits == s[i] >> bits {
                    j += 1;
                }
                if j - i > 1 {
                    let first = order.index(s[i]);
                    let k = key(first);
                    let mut alike = true;
                    for &x in &s[i + 1..j] {
                        let b = order.index(x);
                        if key(b) == k {
                            self.union(first as u32, b as u32);
                        } else {
                            alike = false;
                        }
                    }
                    if !alike {
                        odd.clear();
                        odd.extend(s[i..j].iter().map(|&x| {
                            let b = order.index(x);
                            (key(b), b as u32)
                        }));
                        odd.sort_unstable();
                        for p in odd.windows(2) {
                            if p[0].0 == p[1].0 {
                                self.union(p[0].1, p[1].1);
                            }
                        }
                    }
                }
                i = j;
            }
        });
        *words = order.words;
    }

    /// Each element's root, found in parallel; the forest can be united
    /// further.
    pub(crate) fn roots(&self) -> Vec<u32> {
        (0..self.parent.len() as u32)
            .into_par_iter()
            .map(|x| self.find(x))
            .collect()
    }

    /// Each element's root: the smallest element of its component. Found
    /// in parallel (the unions are over), in the forest's own memory.
    pub(crate) fn into_roots(self) -> Vec<u32> {
        self.parent.par_iter().enumerate().for_each(|(x, p)| {
            let r = self.find(x as u32);
            p.store(r, Relaxed);
        });
        self.parent.into_iter().map(AtomicU32::into_inner).collect()
    }
}

/// How each attribute of a person is resolved from its records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The most frequent known value; ties go to the latest record's.
    MostFrequent,
    /// `code` if any record has it; otherwise the latest known value.
    AnyThenLatest(u8),
}

/// Persons: for each, the records it joins and its resolved attributes.
#[derive(Debug, Default)]
pub struct Persons {
    /// Records per person.
    pub records: Vec<u32>,
    /// Distinct organisations per person.
    pub organisations: Vec<u16>,
    /// Earliest event month.
    pub first_month: Vec<u32>,
    /// Latest event month.
    pub last_month: Vec<u32>,
    /// Whether the person has no match key (an anonymous record).
    pub anonymous: Vec<bool>,
    /// Resolved attribute codes, one vector per attribute; 0 is unknown.
    pub attrs: Vec<Vec<u8>>,
}

impl Persons {
    /// How many persons.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// `n` persons with `attrs` attributes, every value 0.
    fn zeroed(attrs: usize, n: usize) -> Self {
        Persons {
            records: vec![0; n],
            organisations: vec![0; n],
            first_month: vec![0; n],
            last_month: vec![0; n],
            anonymous: vec![false; n],
            attrs: (0..attrs).map(|_| vec![0; n]).collect(),
        }
    }

    /// Shortens every column to the first `n` persons and gives the rest
    /// of their memory back.
    pub fn truncate(&mut self, n: usize) {
        fn cut<T>(v: &mut Vec<T>, n: usize) {
            v.truncate(n);
            v.shrink_to_fit();
        }
        cut(&mut self.records, n);
        cut(&mut self.organisations, n);
        cut(&mut self.first_month, n);
        cut(&mut self.last_month, n);
        cut(&mut self.anonymous, n);
        for a in &mut self.attrs {
            cut(a, n);
        }
    }
}

/// A range of persons of every column of [`Persons`], written by one task.
struct PersonsSlot<'a> {
    records: &'a mut [u32],
    organisations: &'a mut [u16],
    first_month: &'a mut [u32],
    last_month: &'a mut [u32],
    anonymous: &'a mut [bool],
    attrs: Vec<&'a mut [u8]>,
}

impl<'a> PersonsSlot<'a> {
    fn of(p: &'a mut Persons) -> Self {
        PersonsSlot {
            records: &mut p.records,
            organisations: &mut p.organisations,
            first_month: &mut p.first_month,
            last_month: &mut p.last_month,
            anonymous: &mut p.anonymous,
            attrs: p.attrs.iter_mut().map(|a| a.as_mut_slice()).collect(),
        }
    }

    /// The first `n` persons, and the rest.
    fn split(self, n: usize) -> (Self, Self) {
        let (r, r2) = self.records.split_at_mut(n);
        let (o, o2) = self.organisations.split_at_mut(n);
        let (f, f2) = self.first_month.split_at_mut(n);
        let (l, l2) = self.last_month.split_at_mut(n);
        let (a, a2) = self.anonymous.split_at_mut(n);
        let (attrs, attrs2) = self.attrs.into_iter().map(|c| c.split_at_mut(n)).unzip();
        (
            PersonsSlot {
                records: r,
                organisations: o,
                first_month: f,
                last_month: l,
                anonymous: a,
                attrs,
            },
            PersonsSlot {
                records: r2,
                organisations: o2,
                first_month: f2,
                last_month: l2,
                anonymous: a2,
                attrs: attrs2,
            },
        )
    }
}

/// The word of an element without a key. No element has it: its index
/// bits are all ones, and indices are below `n`, which is below
/// `2^bits`.
const NO_WORD: u64 = u64::MAX;

/// Records in the order of their keys, for finding those that share one:
/// each keyed record is one 64-bit word, the key's first bits above the
/// record's index (as many bits as indices need), so that the sort moves
/// 8 bytes a record; runs of words whose key bits are equal are then
/// ordered by the whole key. The order is by whole key, then index.
pub(crate) struct KeyOrder {
    words: Vec<u64>,
    bits: u32,
}

impl KeyOrder {
    /// Elements `0..n` whose key `key(i)` is not 0 and that `keep` accepts.
    pub(crate) fn new(
        n: usize,
        key: &(impl Fn(usize) -> u128 + Sync),
        keep: impl Fn(usize) -> bool + Sync,
    ) -> Self {
        let mut order = Self::by_first_bits(Vec::new(), n, key, keep);
        let bits = order.bits;
        let words = &mut order.words;
        // Keys whose first bits are equal but that differ after are next
        // to each other only by chance: order such runs by the whole key.
        let index = |w: u64| (w & ((1u64 << bits) - 1)) as usize;
        let mut run = 0;
        for i in 1..=words.len() {
            if i == words.len() || words[i] >> bits != words[run] >> bits {
                if i - run > 2 {
                    words[run..i].sort_unstable_by_key(|&w| (key(index(w)), w));
                }
                run = i;
            }
        }
        order
    }

    /// The words sorted, that is by the keys' first bits, then by index;
    /// runs of equal first bits are left as they are.
    ///
    /// Every element gets a word, made in parallel; one without a key, or
    /// that `keep` refuses, gets [`NO_WORD`], which sorts last and is cut
    /// off after the sort.
    fn by_first_bits(
        mut words: Vec<u64>,
        n: usize,
        key: &(impl Fn(usize) -> u128 + Sync),
        keep: impl Fn(usize) -> bool + Sync,
    ) -> Self {
        let bits = (usize::BITS - n.leading_zeros()).max(1);
        assert!(bits <= 32, "record indices are 32-bit");
        (0..n)
            .into_par_iter()
            .with_min_len(1 << 14)
            .map(|i| {
                let k = key(i);
                if k != 0 && keep(i) {
                    ((k >> (64 + bits)) as u64) << bits | i as u64
                } else {
                    NO_WORD
                }
            })
            .collect_into_vec(&mut words);
        sort_words(&mut words);
        let kept = words.partition_point(|&w| w != NO_WORD);
        words.truncate(kept);
        KeyOrder { words, bits }
    }

    fn index(&self, w: u64) -> usize {
        (w & ((1u64 << self.bits) - 1)) as usize
    }

    /// Each element with the next one of the same whole key, in order.
    pub(crate) fn equal_neighbours<'a>(
        &'a self,
        key: impl Fn(usize) -> u128 + 'a,
    ) -> impl Iterator<Item = (usize, usize)> + 'a {
        self.words.windows(2).filter_map(move |w| {
            let (a, b) = (self.index(w[0]), self.index(w[1]));
            (w[0] >> self.bits == w[1] >> self.bits && key(a) == key(b)).then_some((a, b))
        })
    }
}

/// Sorts words of keys. The words' high bits are hash bits, evenly spread,
/// which a radix sort splits evenly; from a million words up it is
/// `voracious_radix_sort`'s peeka sort (a parallel in-place MSD radix sort
/// after the Regions sort of Obeya et al.) on as many threads as the pool
/// has, about twice as fast as rayon's comparison sort here. Below that,
/// and inside a pool's task (whose threads are busy), the comparison sort.
pub(crate) fn sort_words(words: &mut [u64]) {
    let threads = rayon::current_num_threads();
    if words.len() >= 1 << 20 && threads > 1 && rayon::current_thread_index().is_none() {
        voracious_radix_sort::peeka_sort(words, 8, 500_000, threads);
    } else {
        words.par_sort_unstable();
    }
}

/// Links records into persons and resolves each person's attributes with
/// `rules` (one per attribute column). Persons come out in the order of
/// their earliest record by recency. The records are used up: each part is
/// freed as soon as it is no longer needed.
pub fn link(records: Records, rules: &[Rule]) -> Persons {
    link_with(records, rules, false).0
}

/// A record's person in the ranks' persons column: set on every record
/// but a person's first.
const LATER: u32 = 1 << 31;

/// [`link`]: the records that share a key are one person. With
/// `with_person`, also returns each record's person (an index into the
/// persons). Fuzzy links are added by [`link_groups`].
///
/// The work is done on ranks: rank `r` is record `order[r]`, the records
/// from earliest to latest. A component's root in the [`Forest`] is its
/// smallest rank, its earliest record, so persons numbered by their
/// earliest record are the roots counted in rank order, and a person's
/// records are its root and, in rank order, the others.
pub fn link_with(
    records: Records,
    rules: &[Rule],
    with_person: bool,
) -> (Persons, Option<Vec<u32>>) {
    let keyless = keyless(&records.key_passport, &records.key_name_dob);
    link_by(
        records,
        rules,
        keyless,
        with_person,
        |forest, order, records| {
            let mut words = Vec::new();
            forest.unite_keys(
                &std::mem::take(&mut records.key_passport),
                Some(order),
                &mut words,
            );
            forest.unite_keys(
                &std::mem::take(&mut records.key_name_dob),
                Some(order),
                &mut words,
            );
        },
    )
}

/// Which records have neither exact key: each is alone, anonymous.
pub fn keyless(key_passport: &[u128], key_name_dob: &[u128]) -> Vec<bool> {
    key_passport
        .iter()
        .zip(key_name_dob)
        .map(|(&p, &nd)| p == 0 && nd == 0)
        .collect()
}

/// Each record's rank in `order`.
fn ranks(order: &[u32]) -> Vec<u32> {
    let mut rank = vec![0u32; order.len()];
    for (r, &i) in order.iter().enumerate() {
        rank[i as usize] = r as u32;
    }
    rank
}

/// [`link_with`] for records whose groups are already found: `groups[i]`
/// is a record of record `i`'s group (as [`super::fuzzy::FuzzyLinks`]
/// gives them: exact keys and fuzzy links together), `keyless` which
/// records have no exact key ([`keyless`], found before the keys were
/// given to fuzzy linkage and freed). The records' keys are not read.
pub fn link_groups(
    records: Records,
    rules: &[Rule],
    groups: &[u32],
    keyless: Vec<bool>,
    with_person: bool,
) -> (Persons, Option<Vec<u32>>) {
    assert_eq!(groups.len(), records.len(), "one group a record");
    link_by(records, rules, keyless, with_person, |forest, order, _| {
        let rank = ranks(order);
        groups.par_iter().enumerate().for_each(|(i, &g)| {
            if g as usize != i {
                forest.union(rank[i], rank[g as usize]);
            }
        });
    })
}

/// [`link_with`] and [`link_groups`]: `unite` unites the ranks of the
/// records of each person in `forest` (rank `r` is record `order[r]`).
fn link_by(
    mut records: Records,
    rules: &[Rule],
    keyless: Vec<bool>,
    with_person: bool,
    unite: impl FnOnce(&Forest, &[u32], &mut Records),
) -> (Persons, Option<Vec<u32>>) {
    let n = records.len();
    assert_eq!(rules.len(), records.width, "one rule per attribute");
    assert!(n < LATER as usize, "at most 2^31 records a form");
    assert_eq!(keyless.len(), n, "one keyless flag a record");
    let t = std::time::Instant::now();
    let order = recency_order(&records.month, &records.drop_seq);
    records.drop_seq = Vec::new();
    let forest = Forest::new(n);
    unite(&forest, &order, &mut records);
    let Records {
        key_passport: _,
        key_name_dob: _,
        month,
        drop_seq: _,
        org,
        pos: _,
        width,
        codes,
    } = records;
    let mut person = forest.into_roots();
    super::input::trace("link: unite by keys", t);
    let t = std::time::Instant::now();

    // Persons are the roots in rank order: count each stretch's roots,
    // then number them and note each person's first rank, a stretch per
    // task.
    let stretch = n.div_ceil(4 * rayon::current_num_threads()).max(1 << 16);
    let roots: Vec<usize> = person
        .par_chunks(stretch)
        .enumerate()
        .map(|(c, s)| {
            let base = c * stretch;
            s.iter()
                .enumerate()
                .filter(|&(j, &x)| x as usize == base + j)
                .count()
        })
        .collect();
    let p: usize = roots.iter().sum();
    let mut first_rank = vec![0u32; p];
    let mut number = vec![0u32; n];
    {
        let mut jobs = Vec::with_capacity(roots.len());
        let (mut firsts, mut numbers) = (first_rank.as_mut_slice(), number.as_mut_slice());
        let mut base = 0;
        for (c, &k) in roots.iter().enumerate() {
            let (f, f2) = std::mem::take(&mut firsts).split_at_mut(k);
            let (nb, nb2) = std::mem::take(&mut numbers).split_at_mut(stretch.min(n - c * stretch));
            jobs.push((c * stretch, base, f, nb));
            (firsts, numbers) = (f2, nb2);
            base += k;
        }
        let person = &person;
        jobs.into_par_iter().for_each(|(start, base, f, nb)| {
            let mut k = 0;
            for (j, slot) in nb.iter_mut().enumerate() {
                let r = start + j;
                if person[r] as usize == r {
                    *slot = (base + k) as u32;
                    f[k] = r as u32;
                    k += 1;
                }
            }
        });
    }
    // Each rank's person, in place of its root, marked when it is not the
    // person's first record.
    person
        .par_chunks_mut(stretch)
        .enumerate()
        .for_each(|(c, s)| {
            for (j, x) in s.iter_mut().enumerate() {
                let r = c * stretch + j;
                *x = if *x as usize == r {
                    number[r]
                } else {
                    number[*x as usize] | LATER
                };
            }
        });
    drop(number);
    // The ranks that are not a person's first, one word each (the
    // person above the rank), sorted: by person, then rank.
    let mut by_person: Vec<u64> = person
        .par_iter()
        .enumerate()
        .filter(|&(_, &x)| x & LATER != 0)
        .map(|(r, &x)| u64::from(x & !LATER) << 32 | r as u64)
        .collect();
    sort_words(&mut by_person);
    super::input::trace("link: number and group persons", t);
    let t = std::time::Instant::now();
    // The later records' months, organisations and codes, gathered in the
    // order of `by_person`. Those records are scattered over the columns, and
    // a loop that does nothing but fetch them keeps many of its cache
    // misses in flight at once; the persons' loop below then reads them in
    // order.
    let later: Vec<u32> = by_person
        .par_iter()
        .map(|&w| order[w as u32 as usize])
        .collect();
    let later_month: Vec<u32> = later.par_iter().map(|&i| month[i as usize]).collect();
    let later_org: Vec<u16> = later.par_iter().map(|&i| org[i as usize]).collect();
    let mut later_codes = vec![0u8; later.len() * width];
    if width > 0 {
        later_codes
            .par_chunks_mut(width)
            .zip(later.par_iter())
            .for_each(|(out, &i)| {
                let i = i as usize;
                out.copy_from_slice(&codes[i * width..(i + 1) * width]);
            });
    }
    drop(later);

    // Persons are resolved in parallel, a range of them per task, each
    // written straight into its range of the columns.
    let chunk = (p / (4 * rayon::current_num_threads()).max(1)).clamp(1 << 12, 1 << 20);
    let mut out = Persons::zeroed(rules.len(), p);
    let mut ranges = Vec::with_capacity(p.div_ceil(chunk));
    let mut rest = PersonsSlot::of(&mut out);
    for base in (0..p).step_by(chunk) {
        let (head, tail) = rest.split(chunk.min(p - base));
        ranges.push((base, head));
        rest = tail;
    }
    ranges.into_par_iter().for_each(|(base, mut out)| {
        // This range's later records: from the first of person `base`.
        let mut at = by_person.partition_point(|&w| w >> 32 < base as u64);
        let mut orgs: Vec<u16> = Vec::new();
        let mut tally: Vec<(u8, u32, usize)> = Vec::new();
        let mut rows: Vec<u8> = Vec::new();
        for j in 0..out.records.len() {
            let k = base + j;
            let first = order[first_rank[k] as usize] as usize;
            let from = at;
            while at < by_person.len() && by_person[at] >> 32 == k as u64 {
                at += 1;
            }
            let to = at;
            let row = &codes[first * width..(first + 1) * width];
            out.first_month[j] = month[first];
            out.anonymous[j] = keyless[first];
            if from == to {
                out.records[j] = 1;
                out.last_month[j] = month[first];
                out.organisations[j] = 1;
                for (out, &v) in out.attrs.iter_mut().zip(row) {
                    out[j] = v;
                }
                continue;
            }
            out.records[j] = (1 + to - from) as u32;
            out.last_month[j] = later_month[to - 1];
            if to - from == 1 {
                // Two records, the common case of a person seen again.
                out.organisations[j] = 1 + u16::from(later_org[from] != org[first]);
                let later_row = &later_codes[from * width..to * width];
                for ((rule, out), (&x, &y)) in rules
                    .iter()
                    .zip(&mut out.attrs)
                    .zip(row.iter().zip(later_row))
                {
                    out[j] = resolve_two(x, y, *rule);
                }
                continue;
            }
            orgs.clear();
            orgs.push(org[first]);
            orgs.extend_from_slice(&later_org[from..to]);
            orgs.sort_unstable();
            orgs.dedup();
            out.organisations[j] = orgs.len() as u16;
            // The group's rows side by side, then each attribute down them.
            rows.clear();
            rows.extend_from_slice(row);
            rows.extend_from_slice(&later_codes[from * width..to * width]);
            for (a, (rule, out)) in rules.iter().zip(&mut out.attrs).enumerate() {
                let values = rows.iter().skip(a).step_by(width).copied();
                out[j] = resolve(values, *rule, &mut tally);
            }
        }
    });
    drop((later_month, later_org, later_codes, by_person, first_rank));
    drop((codes, org, keyless, month));
    super::input::trace("link: resolve persons", t);
    let person = with_person.then(|| {
        let mut of_record = vec![0u32; n];
        for (&i, &x) in order.iter().zip(&person) {
            of_record[i as usize] = x & !LATER;
        }
        of_record
    });
    (out, person)
}

/// [`resolve`] for a person of two records, `x` then `y`: the later
/// record's value when it is known (the most frequent, or the tie's
/// latest), the earlier's otherwise; the rule's code if either has it.
#[inline]
fn resolve_two(x: u8, y: u8, rule: Rule) -> u8 {
    let latest = if y != 0 { y } else { x };
    match rule {
        Rule::AnyThenLatest(code) if code != 0 && (x == code || y == code) => code,
        _ => latest,
    }
}

/// Resolves one attribute over a person's records, given in recency order.
fn resolve(values: impl Iterator<Item = u8>, rule: Rule, tally: &mut Vec<(u8, u32, usize)>) -> u8 {
    tally.clear();
    let mut latest_known = 0;
    for (pos, v) in values.enumerate() {
        if v == 0 {
            continue;
        }
        latest_known = v;
        match tally.iter_mut().find(|(code, _, _)| *code == v) {
            Some(t) => {
                t.1 += 1;
                t.2 = pos;
            }
            None => tally.push((v, 1, pos)),
        }
    }
    match rule {
        Rule::AnyThenLatest(code) => {
            if tally.iter().any(|(c, _, _)| *c == code) {
                code
            } else {
                latest_known
            }
        }
        Rule::MostFrequent => tally
            .iter()
            .max_by_key(|(_, count, last)| (*count, *last))
            .map_or(0, |(c, _, _)| *c),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records from (passport key, name key, month, org, attribute), all
    /// of one drop.
    fn records(rows: &[(u128, u128, u32, u16, u8)]) -> Records {
        let mut r = Records::with_attrs(1);
        for &(p, nd, m, o, a) in rows {
            r.key_passport.push(p);
            r.key_name_dob.push(nd);
            r.month.push(m);
            r.drop_seq.push(1);
            r.org.push(o);
            r.pos.push(r.pos.len() as u32);
            r.codes.push(a);
        }
        r
    }

    #[test]
    fn the_radix_sort_of_many_words_orders_them_as_a_comparison_sort_does() {
        use rand::{Rng, SeedableRng};
        // Above the size from which the radix sort is used, with words
        // like the linkage's (hash bits above an index) and duplicates.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        let n = (1 << 20) + 12_345;
        let words: Vec<u64> = (0..n)
            .map(|i| match rng.random_range(0..8) {
                0 => 7 << 40 | (i as u64 & 3),
                _ => rng.random_range(0..1u64 << 43) << 21 | i as u64,
            })
            .collect();
        let mut radix = words.clone();
        sort_words(&mut radix);
        let mut expected = words;
        expected.sort_unstable();
        assert_eq!(radix, expected);
        // Inside a pool's task the comparison sort is used; same order.
        let mut inside = expected.clone();
        inside.reverse();
        rayon::scope(|_| sort_words(&mut inside));
        assert_eq!(inside, expected);
    }

    #[test]
    fn the_forest_finds_the_components_a_plain_union_find_finds_rooted_at_their_smallest() {
        use rand::{Rng, SeedableRng};
        // Two keys a record drawn from small spaces (0: none), so that
        // components chain across both; enough records for rayon to split
        // the unions between threads.
        let n = 200_000;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let mut draw = |space: u128| -> Vec<u128> {
            (0..n)
                .map(|_| match rng.random_range(0..4) {
                    0 => 0,
                    _ => rng.random_range(1..=space) << 70 | rng.random_range(0..2),
                })
                .collect()
        };
        let (a, b) = (draw(150_000), draw(120_000));
        let forest = Forest::new(n);
        let mut words = Vec::new();
        forest.unite_keys(&a, None, &mut words);
        forest.unite_keys(&b, None, &mut words);
        forest.union(5, 77);
        let roots = forest.into_roots();
        let mut uf = UnionFind::new(n);
        for keys in [&a, &b] {
            let mut by_key: Vec<(u128, u32)> = (0..n as u32)
                .filter(|&i| keys[i as usize] != 0)
                .map(|i| (keys[i as usize], i))
                .collect();
            by_key.sort_unstable();
            for w in by_key.windows(2) {
                if w[0].0 == w[1].0 {
                    uf.union(w[0].1, w[1].1);
                }
            }
        }
        uf.union(5, 77);
        let mut smallest = vec![u32::MAX; n];
        for i in 0..n as u32 {
            let r = uf.find(i) as usize;
            smallest[r] = smallest[r].min(i);
        }
        let mut joined = 0;
        for i in 0..n as u32 {
            assert_eq!(
                roots[i as usize],
                smallest[uf.find(i) as usize],
                "record {i}"
            );
            joined += (roots[i as usize] != i) as usize;
        }
        assert!(joined > n / 10, "the keys join many records: {joined}");
    }

    #[test]
    fn chains_join_transitively_and_anonymous_records_stay_alone() {
        // A-B share a passport key, B-C a name key; D alone; E, F anonymous.
        let r = records(&[
            (1, 0, 10, 0, 1),
            (1, 7, 11, 1, 1),
            (0, 7, 12, 2, 1),
            (2, 8, 10, 0, 1),
            (0, 0, 10, 0, 1),
            (0, 0, 10, 0, 1),
        ]);
        let p = link(r, &[Rule::MostFrequent]);
        assert_eq!(p.len(), 4);
        let mut sizes = p.records.clone();
        sizes.sort();
        assert_eq!(sizes, [1, 1, 1, 3]);
        let three = p.records.iter().position(|&n| n == 3).unwrap();
        assert_eq!(p.organisations[three], 3);
        assert_eq!((p.first_month[three], p.last_month[three]), (10, 12));
        assert_eq!(p.anonymous.iter().filter(|&&a| a).count(), 2);
    }

    #[test]
    fn identified_wins_otherwise_the_latest_known_outcome() {
        // Outcome codes: 1 identified, 2 not identified, 3 pending.
        let any = [Rule::AnyThenLatest(1)];
        let p = link(records(&[(5, 0, 12, 0, 3), (5, 0, 10, 1, 1)]), &any);
        assert_eq!(p.attrs[0], [1]);
        let p = link(
            records(&[(5, 0, 10, 0, 3), (5, 0, 12, 1, 2), (5, 0, 13, 1, 0)]),
            &any,
        );
        assert_eq!(p.attrs[0], [2], "the latest known, a blank does not count");
    }

    #[test]
    fn two_records_resolve_as_any_number_of_records_do() {
        let mut tally = Vec::new();
        for rule in [
            Rule::MostFrequent,
            Rule::AnyThenLatest(1),
            Rule::AnyThenLatest(3),
        ] {
            for x in 0..5u8 {
                for y in 0..5u8 {
                    assert_eq!(
                        resolve_two(x, y, rule),
                        resolve([x, y].into_iter(), rule, &mut tally),
                        "{rule:?} over {x} then {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn most_frequent_known_value_with_ties_to_the_latest() {
        let mf = [Rule::MostFrequent];
        let p = link(
            records(&[
                (5, 0, 10, 0, 4),
                (5, 0, 11, 0, 4),
                (5, 0, 12, 0, 6),
                (5, 0, 13, 0, 0),
            ]),
            &mf,
        );
        assert_eq!(p.attrs[0], [4]);
        let p = link(records(&[(5, 0, 10, 0, 4), (5, 0, 12, 0, 6)]), &mf);
        assert_eq!(p.attrs[0], [6], "a tie goes to the latest");
        let p = link(records(&[(5, 0, 12, 0, 6), (5, 0, 10, 0, 4)]), &mf);
        assert_eq!(p.attrs[0], [6], "whatever the input order");
    }

    #[test]
    fn the_result_does_not_depend_on_the_order_drops_are_read_in() {
        let rows = [
            (1, 0, 10, 0, 1),
            (1, 7, 11, 1, 2),
            (0, 7, 12, 2, 2),
            (3, 9, 10, 0, 1),
            (0, 0, 10, 0, 1),
        ];
        // Each record in a drop of its own, filed in this order.
        let in_drops = |rows: &[(u128, u128, u32, u16, u8)], seqs: &[u32]| {
            let mut r = records(rows);
            r.drop_seq = seqs.to_vec();
            r
        };
        let a = link(in_drops(&rows, &[1, 2, 3, 4, 5]), &[Rule::MostFrequent]);
        let mut rev = rows;
        rev.reverse();
        let b = link(in_drops(&rev, &[5, 4, 3, 2, 1]), &[Rule::MostFrequent]);
        assert_eq!(a.records, b.records);
        assert_eq!(a.attrs, b.attrs);
        assert_eq!(a.first_month, b.first_month);
        assert_eq!(a.anonymous, b.anonymous);
    }

    #[test]
    fn within_a_drop_and_month_the_later_position_is_the_later_record() {
        // The reader puts each drop's records of a month in record-key
        // order; a tie between them goes to the one placed last.
        let p = link(
            records(&[(5, 0, 10, 0, 4), (5, 0, 10, 0, 6)]),
            &[Rule::MostFrequent],
        );
        assert_eq!(p.attrs[0], [6]);
        let p = link(
            records(&[(5, 0, 10, 0, 6), (5, 0, 10, 0, 4)]),
            &[Rule::MostFrequent],
        );
        assert_eq!(p.attrs[0], [4]);
    }

    #[test]
    fn recency_sorts_runs_of_month_and_drop_keeping_positions_within() {
        let month = [12, 12, 10, 10, 12, 11, 10];
        let drop_seq = [3, 3, 3, 1, 1, 2, 1];
        let order = recency_order(&month, &drop_seq);
        let mut expected: Vec<u32> = (0..month.len() as u32).collect();
        expected.sort_by_key(|&i| (month[i as usize], drop_seq[i as usize], i));
        assert_eq!(order, expected);
        // Runs over the stretches the starts are found in (65,536
        // records each), one starting right at a stretch's first record,
        // and the same month and drop coming back after another.
        let mut month = Vec::new();
        let mut drop_seq = Vec::new();
        for (len, m, d) in [
            (65_536, 3, 2),
            (70_000, 1, 5),
            (1, 1, 4),
            (131_071, 3, 2),
            (5, 2, 1),
            (9_000, 1, 5),
        ] {
            month.extend(std::iter::repeat_n(m, len));
            drop_seq.extend(std::iter::repeat_n(d, len));
        }
        let order = recency_order(&month, &drop_seq);
        let mut expected: Vec<u32> = (0..month.len() as u32).collect();
        expected.sort_by_key(|&i| (month[i as usize], drop_seq[i as usize], i));
        assert_eq!(order, expected);
    }

    #[test]
    fn keys_sharing_their_first_64_bits_link_only_when_the_whole_keys_are_equal() {
        let hi = 0xabcd_u128 << 64;
        let p = link(
            records(&[
                (hi | 1, 0, 10, 0, 1),
                (hi | 2, 0, 10, 0, 1),
                (hi | 1, 0, 11, 0, 1),
            ]),
            &[Rule::MostFrequent],
        );
        let mut sizes = p.records.clone();
        sizes.sort();
        assert_eq!(sizes, [1, 2]);
    }

    #[test]
    fn linking_by_groups_found_beforehand_gives_the_persons_linking_by_keys_gives() {
        use rand::{Rng, SeedableRng};
        // Keys from small pools, so that many are shared; some records
        // have none; months out of order.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(11);
        let rows: Vec<_> = (0..5_000)
            .map(|_| {
                let key =
                    |rng: &mut rand_chacha::ChaCha8Rng, pool: u128| match rng.random_range(0..4) {
                        0 => 0,
                        _ => (rng.random_range(1..pool) * 0x9e37_79b9_7f4a_7c15) << 40,
                    };
                let p = key(&mut rng, 2_000);
                let nd = key(&mut rng, 3_000);
                (
                    p,
                    nd,
                    rng.random_range(0..12),
                    rng.random_range(0..5),
                    rng.random_range(0..4),
                )
            })
            .collect();
        let by_keys = link_with(records(&rows), &[Rule::MostFrequent], true);
        // The groups as fuzzy linkage gives them: the exact-key groups
        // found on the records, each named by its smallest record.
        let r = records(&rows);
        let keyless = keyless(&r.key_passport, &r.key_name_dob);
        let forest = Forest::new(rows.len());
        let mut words = Vec::new();
        forest.unite_keys(&r.key_passport, None, &mut words);
        forest.unite_keys(&r.key_name_dob, None, &mut words);
        let groups = forest.into_roots();
        assert!(groups.iter().enumerate().any(|(i, &g)| g as usize != i));
        let by_groups = link_groups(r, &[Rule::MostFrequent], &groups, keyless.clone(), true);
        assert_eq!(format!("{:?}", by_groups.0), format!("{:?}", by_keys.0));
        assert_eq!(by_groups.1, by_keys.1);
        // Groups joined further (as fuzzy links join them) give the
        // components a plain union-find finds.
        let mut reference = UnionFind::new(rows.len());
        for (i, &g) in groups.iter().enumerate() {
            reference.union(i as u32, g);
        }
        let forest = Forest::new(rows.len());
        for (i, &g) in groups.iter().enumerate() {
            forest.union(i as u32, g);
        }
        for _ in 0..300 {
            let (a, b) = (rng.random_range(0..5_000u32), rng.random_range(0..5_000u32));
            reference.union(a, b);
            forest.union(a, b);
        }
        let joined = forest.into_roots();
        let (p, person) = link_groups(
            records(&rows),
            &[Rule::MostFrequent],
            &joined,
            keyless,
            true,
        );
        let person = person.unwrap();
        assert!(p.len() < by_keys.0.len());
        for i in 0..rows.len() as u32 {
            for j in [0, 1, 77, 4_999] {
                assert_eq!(
                    person[i as usize] == person[j as usize],
                    reference.find(i) == reference.find(j),
                    "records {i} and {j}"
                );
            }
        }
        assert_eq!(p.records.iter().sum::<u32>() as usize, rows.len());
    }

    #[test]
    fn a_run_of_keys_alike_in_their_first_bits_links_by_the_whole_key() {
        // Five keys whose first 96 bits are equal, interleaved: only the
        // equal whole keys join.
        let hi = 0x1234_5678_u128 << 96;
        let rows: Vec<_> = [1u128, 2, 1, 3, 2, 1]
            .iter()
            .enumerate()
            .map(|(m, &low)| (0, hi | low, m as u32, 0, 1))
            .collect();
        let (p, person) = link_with(records(&rows), &[Rule::MostFrequent], true);
        let person = person.unwrap();
        let mut sizes = p.records.clone();
        sizes.sort();
        assert_eq!(sizes, [1, 2, 3]);
        assert_eq!(person[0], person[2]);
        assert_eq!(person[0], person[5]);
        assert_eq!(person[1], person[4]);
        assert_ne!(person[0], person[1]);
        assert_ne!(person[3], person[0]);
        assert_ne!(person[3], person[1]);
    }
}
