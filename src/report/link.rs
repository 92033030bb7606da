//! Linkage: records into persons (DESIGN.md, "Linking records into
//! persons"; the rules and their reasons are in docs/linkage.md).
//!
//! A person is a connected component of the graph whose nodes are records
//! and whose edges join records that share a match key. Records are held
//! compactly (a few bytes of codes each), keys are sorted, equal neighbours
//! are united in a union-find, and each component's attributes are
//! resolved by the conflict rules.

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
    /// be traced back to the NGO's input row.
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
/// one month and drop: the runs are sorted, not the records.
fn recency_order(month: &[u32], drop_seq: &[u32]) -> Vec<u32> {
    let n = month.len();
    let mut runs: Vec<(u32, u32, u32, u32)> = Vec::new();
    let mut start = 0;
    for i in 1..=n {
        if i == n || month[i] != month[start] || drop_seq[i] != drop_seq[start] {
            runs.push((month[start], drop_seq[start], start as u32, i as u32));
            start = i;
        }
    }
    runs.sort_unstable();
    let mut order = Vec::with_capacity(n);
    for (_, _, a, b) in runs {
        order.extend(a..b);
    }
    order
}

/// A union-find over record indices (union by rank, path halving).
pub(crate) struct UnionFind {
    parent: Vec<u32>,
    rank: Vec<u8>,
}

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

    /// The root of every element (the union-find is used up), found in
    /// parallel: the walks only read, and union by rank keeps them short.
    fn into_roots(self) -> Vec<u32> {
        let parent = self.parent;
        (0..parent.len() as u32)
            .into_par_iter()
            .map(|mut x| {
                while parent[x as usize] != x {
                    x = parent[x as usize];
                }
                x
            })
            .collect()
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
    /// The records whose key is not 0 and that `keep` accepts.
    pub(crate) fn new(keys: &[u128], keep: impl Fn(usize) -> bool) -> Self {
        let bits = (usize::BITS - keys.len().leading_zeros()).max(1);
        assert!(bits <= 32, "record indices are 32-bit");
        let mut words: Vec<u64> = keys
            .iter()
            .enumerate()
            .filter(|&(i, &k)| k != 0 && keep(i))
            .map(|(i, &k)| ((k >> (64 + bits)) as u64) << bits | i as u64)
            .collect();
        words.par_sort_unstable();
        // Keys whose first bits are equal but that differ after are next
        // to each other only by chance: order such runs by the whole key.
        let index = |w: u64| (w & ((1u64 << bits) - 1)) as usize;
        let mut run = 0;
        for i in 1..=words.len() {
            if i == words.len() || words[i] >> bits != words[run] >> bits {
                if i - run > 2 {
                    words[run..i].sort_unstable_by_key(|&w| (keys[index(w)], w));
                }
                run = i;
            }
        }
        KeyOrder { words, bits }
    }

    fn index(&self, w: u64) -> usize {
        (w & ((1u64 << self.bits) - 1)) as usize
    }

    /// Each record with the next one of the same whole key, in order.
    pub(crate) fn equal_neighbours<'a>(
        &'a self,
        keys: &'a [u128],
    ) -> impl Iterator<Item = (usize, usize)> + 'a {
        self.words.windows(2).filter_map(move |w| {
            let (a, b) = (self.index(w[0]), self.index(w[1]));
            (w[0] >> self.bits == w[1] >> self.bits && keys[a] == keys[b]).then_some((a, b))
        })
    }
}

/// Unites records that share a key.
pub(crate) fn unite_by(keys: &[u128], uf: &mut UnionFind) {
    for (a, b) in KeyOrder::new(keys, |_| true).equal_neighbours(keys) {
        uf.union(a as u32, b as u32);
    }
}

/// Links records into persons and resolves each person's attributes with
/// `rules` (one per attribute column). Persons come out in the order of
/// their earliest record by recency. The records are used up: each part is
/// freed as soon as it is no longer needed.
pub fn link(records: Records, rules: &[Rule]) -> Persons {
    link_with(records, rules, &[]).0
}

/// [`link`], with `joined` (pairs of record indices, such as the fuzzy
/// links of [`super::fuzzy`]) united besides the records that share a key.
/// Also returns each record's person (an index into the persons).
pub fn link_with(records: Records, rules: &[Rule], joined: &[(u32, u32)]) -> (Persons, Vec<u32>) {
    let n = records.len();
    assert_eq!(rules.len(), records.width, "one rule per attribute");
    let Records {
        key_passport,
        key_name_dob,
        month,
        drop_seq,
        org,
        pos: _,
        width,
        codes,
    } = records;
    // A record without any key is alone: anonymous.
    let keyless: Vec<bool> = key_passport
        .iter()
        .zip(&key_name_dob)
        .map(|(&p, &nd)| p == 0 && nd == 0)
        .collect();
    let t = std::time::Instant::now();
    let mut uf = UnionFind::new(n);
    unite_by(&key_passport, &mut uf);
    drop(key_passport);
    unite_by(&key_name_dob, &mut uf);
    drop(key_name_dob);
    for &(a, b) in joined {
        uf.union(a, b);
    }
    super::input::trace("link: unite by keys", t);
    let t = std::time::Instant::now();
    // Group records by component, each group in recency order, groups in
    // the order of their first record.
    let order = recency_order(&month, &drop_seq);
    drop(drop_seq);
    // Each record's person, numbered by first appearance in recency order.
    let mut person = uf.into_roots();
    let mut person_of_root = vec![u32::MAX; n];
    let mut persons = 0u32;
    for &i in &order {
        let r = person[i as usize] as usize;
        if person_of_root[r] == u32::MAX {
            person_of_root[r] = persons;
            persons += 1;
        }
    }
    for r in person.iter_mut() {
        *r = person_of_root[*r as usize];
    }
    drop(person_of_root);
    // Counting sort of records by person, keeping recency order within.
    let p = persons as usize;
    let mut start = vec![0u32; p + 1];
    for &x in &person {
        start[x as usize + 1] += 1;
    }
    for k in 0..p {
        start[k + 1] += start[k];
    }
    let mut grouped = vec![0u32; n];
    {
        let mut fill = start.clone();
        for &i in &order {
            let x = person[i as usize] as usize;
            grouped[fill[x] as usize] = i;
            fill[x] += 1;
        }
    }
    drop(order);
    super::input::trace("link: number and group persons", t);
    let t = std::time::Instant::now();

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
        let mut orgs: Vec<u16> = Vec::new();
        let mut tally: Vec<(u8, u32, usize)> = Vec::new();
        let mut rows: Vec<u8> = Vec::new();
        for j in 0..out.records.len() {
            let k = base + j;
            let group = &grouped[start[k] as usize..start[k + 1] as usize];
            out.records[j] = group.len() as u32;
            let first = group[0] as usize;
            let last = group[group.len() - 1] as usize;
            out.first_month[j] = month[first];
            out.last_month[j] = month[last];
            out.anonymous[j] = group.len() == 1 && keyless[first];
            if group.len() == 1 {
                out.organisations[j] = 1;
                let row = &codes[first * width..(first + 1) * width];
                for (out, &v) in out.attrs.iter_mut().zip(row) {
                    out[j] = v;
                }
                continue;
            }
            orgs.clear();
            orgs.extend(group.iter().map(|&i| org[i as usize]));
            orgs.sort_unstable();
            orgs.dedup();
            out.organisations[j] = orgs.len() as u16;
            // The group's rows side by side, then each attribute down them.
            rows.clear();
            for &i in group {
                rows.extend_from_slice(&codes[i as usize * width..(i as usize + 1) * width]);
            }
            for (a, (rule, out)) in rules.iter().zip(&mut out.attrs).enumerate() {
                let values = rows.iter().skip(a).step_by(width).copied();
                out[j] = resolve(values, *rule, &mut tally);
            }
        }
    });
    drop((grouped, codes, org, keyless, month));
    super::input::trace("link: resolve persons", t);
    (out, person)
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
    fn a_run_of_keys_alike_in_their_first_bits_links_by_the_whole_key() {
        // Five keys whose first 96 bits are equal, interleaved: only the
        // equal whole keys join.
        let hi = 0x1234_5678_u128 << 96;
        let rows: Vec<_> = [1u128, 2, 1, 3, 2, 1]
            .iter()
            .enumerate()
            .map(|(m, &low)| (0, hi | low, m as u32, 0, 1))
            .collect();
        let (p, person) = link_with(records(&rows), &[Rule::MostFrequent], &[]);
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
