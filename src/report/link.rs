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
#[derive(Debug, Default)]
pub struct Records {
    /// First 128 bits of the `passport` key (0: none).
    pub key_passport: Vec<u128>,
    /// First 128 bits of the `name_dob` key (0: none).
    pub key_name_dob: Vec<u128>,
    /// First 128 bits of the record key: the last tie-break of "latest".
    pub record_key: Vec<u128>,
    /// Month of the event, as months since year 0.
    pub month: Vec<u32>,
    /// Ledger sequence number of the record's drop.
    pub drop_seq: Vec<u32>,
    /// Index of the record's organisation (in the caller's list).
    pub org: Vec<u16>,
    /// Attribute codes, one vector per attribute; 0 is unknown.
    pub attrs: Vec<Vec<u8>>,
}

impl Records {
    /// Records with `attrs` attribute columns.
    pub fn with_attrs(attrs: usize) -> Self {
        Records {
            attrs: vec![Vec::new(); attrs],
            ..Records::default()
        }
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.month.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.month.is_empty()
    }

    /// The order of "latest": month, then the drop's ledger order, then
    /// the record key (arbitrary, but fixed: the result does not depend on
    /// the order records were read in).
    fn recency(&self, i: usize) -> (u32, u32, u128) {
        (self.month[i], self.drop_seq[i], self.record_key[i])
    }
}

/// A union-find over record indices (union by size, path halving).
struct UnionFind {
    parent: Vec<u32>,
    size: Vec<u32>,
}

impl UnionFind {
    fn new(n: usize) -> Self {
        UnionFind {
            parent: (0..n as u32).collect(),
            size: vec![1; n],
        }
    }

    fn find(&mut self, mut x: u32) -> u32 {
        while self.parent[x as usize] != x {
            let p = self.parent[x as usize];
            self.parent[x as usize] = self.parent[p as usize];
            x = self.parent[x as usize];
        }
        x
    }

    fn union(&mut self, a: u32, b: u32) {
        let (mut a, mut b) = (self.find(a), self.find(b));
        if a == b {
            return;
        }
        if self.size[a as usize] < self.size[b as usize] {
            std::mem::swap(&mut a, &mut b);
        }
        self.parent[b as usize] = a;
        self.size[a as usize] += self.size[b as usize];
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
}

/// Unites records that share a key: sorts record indices by key and joins
/// equal neighbours.
fn unite_by(keys: &[u128], uf: &mut UnionFind) {
    let mut idx: Vec<u32> = (0..keys.len() as u32)
        .filter(|&i| keys[i as usize] != 0)
        .collect();
    idx.par_sort_unstable_by_key(|&i| keys[i as usize]);
    for w in idx.windows(2) {
        if keys[w[0] as usize] == keys[w[1] as usize] {
            uf.union(w[0], w[1]);
        }
    }
}

/// Links records into persons and resolves each person's attributes with
/// `rules` (one per attribute column). Persons come out in the order of
/// their earliest record by recency, so the result does not depend on the
/// order of `records`.
pub fn link(records: &Records, rules: &[Rule]) -> Persons {
    let n = records.len();
    assert_eq!(rules.len(), records.attrs.len(), "one rule per attribute");
    let mut uf = UnionFind::new(n);
    unite_by(&records.key_passport, &mut uf);
    unite_by(&records.key_name_dob, &mut uf);
    // Group records by component, each group in recency order, groups in
    // the order of their first record.
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.par_sort_unstable_by_key(|&i| records.recency(i as usize));
    let roots: Vec<u32> = (0..n as u32).map(|i| uf.find(i)).collect();
    let mut person_of_root = vec![u32::MAX; n];
    let mut persons = 0u32;
    for &i in &order {
        let r = roots[i as usize] as usize;
        if person_of_root[r] == u32::MAX {
            person_of_root[r] = persons;
            persons += 1;
        }
    }
    // Counting sort of records by person, keeping recency order within.
    let p = persons as usize;
    let mut start = vec![0u32; p + 1];
    for &i in &order {
        start[person_of_root[roots[i as usize] as usize] as usize + 1] += 1;
    }
    for k in 0..p {
        start[k + 1] += start[k];
    }
    let mut fill = start.clone();
    let mut grouped = vec![0u32; n];
    for &i in &order {
        let person = person_of_root[roots[i as usize] as usize] as usize;
        grouped[fill[person] as usize] = i;
        fill[person] += 1;
    }
    drop((order, roots, person_of_root, fill));

    let mut out = Persons {
        records: Vec::with_capacity(p),
        organisations: Vec::with_capacity(p),
        first_month: Vec::with_capacity(p),
        last_month: Vec::with_capacity(p),
        anonymous: Vec::with_capacity(p),
        attrs: vec![Vec::with_capacity(p); rules.len()],
    };
    let mut orgs: Vec<u16> = Vec::new();
    let mut tally: Vec<(u8, u32, usize)> = Vec::new();
    for k in 0..p {
        let group = &grouped[start[k] as usize..start[k + 1] as usize];
        out.records.push(group.len() as u32);
        orgs.clear();
        orgs.extend(group.iter().map(|&i| records.org[i as usize]));
        orgs.sort_unstable();
        orgs.dedup();
        out.organisations.push(orgs.len() as u16);
        let first = group[0] as usize;
        let last = group[group.len() - 1] as usize;
        out.first_month.push(records.month[first]);
        out.last_month.push(records.month[last]);
        out.anonymous.push(
            group.len() == 1
                && records.key_passport[first] == 0
                && records.key_name_dob[first] == 0,
        );
        for (a, rule) in rules.iter().enumerate() {
            let col = &records.attrs[a];
            let v = if group.len() == 1 {
                col[first]
            } else {
                resolve(group.iter().map(|&i| col[i as usize]), *rule, &mut tally)
            };
            out.attrs[a].push(v);
        }
    }
    out
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

    /// Records from (passport key, name key, month, org, attribute).
    fn records(rows: &[(u128, u128, u32, u16, u8)]) -> Records {
        let mut r = Records::with_attrs(1);
        for (i, &(p, nd, m, o, a)) in rows.iter().enumerate() {
            r.key_passport.push(p);
            r.key_name_dob.push(nd);
            r.record_key.push(1000 + i as u128);
            r.month.push(m);
            r.drop_seq.push(1);
            r.org.push(o);
            r.attrs[0].push(a);
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
        let p = link(&r, &[Rule::MostFrequent]);
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
        let p = link(&records(&[(5, 0, 12, 0, 3), (5, 0, 10, 1, 1)]), &any);
        assert_eq!(p.attrs[0], [1]);
        let p = link(
            &records(&[(5, 0, 10, 0, 3), (5, 0, 12, 1, 2), (5, 0, 13, 1, 0)]),
            &any,
        );
        assert_eq!(p.attrs[0], [2], "the latest known, a blank does not count");
    }

    #[test]
    fn most_frequent_known_value_with_ties_to_the_latest() {
        let mf = [Rule::MostFrequent];
        let p = link(
            &records(&[
                (5, 0, 10, 0, 4),
                (5, 0, 11, 0, 4),
                (5, 0, 12, 0, 6),
                (5, 0, 13, 0, 0),
            ]),
            &mf,
        );
        assert_eq!(p.attrs[0], [4]);
        let p = link(&records(&[(5, 0, 10, 0, 4), (5, 0, 12, 0, 6)]), &mf);
        assert_eq!(p.attrs[0], [6], "a tie goes to the latest");
        let p = link(&records(&[(5, 0, 12, 0, 6), (5, 0, 10, 0, 4)]), &mf);
        assert_eq!(p.attrs[0], [6], "whatever the input order");
    }

    #[test]
    fn the_result_does_not_depend_on_the_order_of_records() {
        let rows = [
            (1, 0, 10, 0, 1),
            (1, 7, 11, 1, 2),
            (0, 7, 12, 2, 2),
            (3, 9, 10, 0, 1),
            (0, 0, 10, 0, 1),
        ];
        let a = link(&records(&rows), &[Rule::MostFrequent]);
        let mut rev = rows;
        rev.reverse();
        let mut r = records(&rev);
        // Keep each record's own record key.
        r.record_key.reverse();
        let b = link(&r, &[Rule::MostFrequent]);
        assert_eq!(a.records, b.records);
        assert_eq!(a.attrs, b.attrs);
        assert_eq!(a.first_month, b.first_month);
    }
}
