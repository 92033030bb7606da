//! Fuzzy linkage: links records of one person that share no exact match
//! key because one NGO typed a name, a date or a passport number
//! differently (docs/linkage.md, "Links that survive typos").
//!
//! Records that share a blocking key are compared field by field: names
//! and passport numbers on their Bloom-filter encodings (Dice coefficient,
//! cut into agreement levels), dates of birth on the keyed hashes they
//! share (same date, one typing error, same year), nationality and sex on
//! their codes. A Fellegi-Sunter model weighs each level: `u` (how often
//! different people agree so) is counted on random pairs, `m` (how often
//! records of one person do) on the pairs an exact key links, and the
//! weight of an exactly equal name is made by how common that name is. The
//! share of matches among the candidate pairs is estimated by EM. A pair
//! is linked when its posterior match probability reaches the threshold,
//! at least two identifying fields agree strongly and the passport numbers
//! do not disagree; links are added strongest first, unless a link would
//! make a person of more than [`Params::max_parts`] exact-key groups (the
//! chaining guard): such links are refused and reported.
//!
//! Only encodings, keyed hashes and codes are read here; no identity value
//! exists on the secretariat's side, and none is ever written.

use std::collections::BTreeMap;
use std::ops::Range;
use std::path::Path;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use arrow_array::{Array, BinaryArray, FixedSizeBinaryArray};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ArrowReaderOptions, ParquetRecordBatchReaderBuilder};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use rustc_hash::FxHashMap;
use serde::Serialize;

use super::link::{AHEAD, Forest, KeyOrder, prefetch, run_pieces};
use crate::error::{Error, Result};
use crate::pseudonymise::encode::{
    DOB_BITS, DobAgreement, NAME_BITS, NAME_FLIP, PASSPORT_BITS, dice, dice_unflipped,
    dob_agreement,
};

const NAME_LEN: usize = NAME_BITS / 8;
const DOB_LEN: usize = DOB_BITS / 8;
const PASSPORT_LEN: usize = PASSPORT_BITS / 8;

/// The encodings of records, in the order of the records they belong to.
#[derive(Debug, Default, Clone)]
pub struct Encodings {
    /// Name filters, `NAME_BITS / 8` bytes a record (zeros when missing).
    pub name: Vec<u8>,
    /// Date-of-birth keys.
    pub dob: Vec<u8>,
    /// Passport filters.
    pub passport: Vec<u8>,
    /// Keyed hash of all name tokens (0: no name).
    pub name_key: Vec<u64>,
    /// Which encodings a record has: bit 0 name, 1 dob, 2 passport.
    pub present: Vec<u8>,
    /// Blocking keys of record `i`: `blocks[block_start[i]..block_start[i + 1]]`.
    pub blocks: Vec<u64>,
    /// Where each record's blocking keys start (one more than records).
    pub block_start: Vec<u32>,
    /// Nationality code (0 unknown).
    pub nationality: Vec<u16>,
    /// Sex code (0 unknown).
    pub sex: Vec<u8>,
}

impl Encodings {
    /// No records yet.
    pub fn new() -> Self {
        Encodings {
            block_start: vec![0],
            ..Default::default()
        }
    }

    /// How many records.
    pub fn len(&self) -> usize {
        self.present.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.present.is_empty()
    }

    /// Appends one record's encodings (`None` where missing). Blocking
    /// keys must be sorted and distinct.
    #[allow(clippy::too_many_arguments)]
    pub fn push(
        &mut self,
        name: Option<&[u8]>,
        dob: Option<&[u8]>,
        passport: Option<&[u8]>,
        name_key: Option<u64>,
        blocks: impl IntoIterator<Item = u64>,
        nationality: u16,
        sex: u8,
    ) {
        let mut present = 0;
        for (bit, (f, out, len)) in [
            (name, &mut self.name, NAME_LEN),
            (dob, &mut self.dob, DOB_LEN),
            (passport, &mut self.passport, PASSPORT_LEN),
        ]
        .into_iter()
        .enumerate()
        {
            match f {
                Some(f) if f.len() == len => {
                    out.extend_from_slice(f);
                    present |= 1 << bit;
                }
                _ => out.resize(out.len() + len, 0),
            }
        }
        self.present.push(present);
        self.name_key.push(name_key.unwrap_or(0));
        self.blocks.extend(blocks);
        self.block_start.push(self.blocks.len() as u32);
        self.nationality.push(nationality);
        self.sex.push(sex);
    }

    /// A record with no encoding (from a drop of format 1).
    pub fn push_none(&mut self, nationality: u16, sex: u8) {
        self.push(None, None, None, None, [], nationality, sex);
    }

    /// Appends record `i` of `other`, with these codes.
    pub fn push_from(&mut self, other: &Encodings, i: usize, nationality: u16, sex: u8) {
        for (out, from, len) in [
            (&mut self.name, &other.name, NAME_LEN),
            (&mut self.dob, &other.dob, DOB_LEN),
            (&mut self.passport, &other.passport, PASSPORT_LEN),
        ] {
            out.extend_from_slice(&from[i * len..(i + 1) * len]);
        }
        self.present.push(other.present[i]);
        self.name_key.push(other.name_key[i]);
        self.blocks.extend_from_slice(other.blocks_of(i));
        self.block_start.push(self.blocks.len() as u32);
        self.nationality.push(nationality);
        self.sex.push(sex);
    }

    fn blocks_of(&self, i: usize) -> &[u64] {
        &self.blocks[self.block_start[i] as usize..self.block_start[i + 1] as usize]
    }

    /// Record `i` as compared.
    fn rec(&self, i: usize) -> Rec<'_> {
        Rec {
            present: self.present[i],
            name: &self.name[i * NAME_LEN..(i + 1) * NAME_LEN],
            dob: &self.dob[i * DOB_LEN..(i + 1) * DOB_LEN],
            passport: &self.passport[i * PASSPORT_LEN..(i + 1) * PASSPORT_LEN],
            nationality: self.nationality[i],
            sex: self.sex[i],
        }
    }

    /// The comparison levels of records `a` and `b`, their name filters
    /// made with bits flipped with probability `name_flip` (whose expected
    /// effect on the Dice is taken back out: [`dice_unflipped`]).
    pub fn compare(&self, a: usize, b: usize, name_flip: f64) -> Levels {
        self.rec(a).compare(self.rec(b), name_flip)
    }
}

/// One record as compared: which encodings it has, the encodings, and its
/// nationality and sex codes.
#[derive(Clone, Copy)]
struct Rec<'a> {
    present: u8,
    name: &'a [u8],
    dob: &'a [u8],
    passport: &'a [u8],
    nationality: u16,
    sex: u8,
}

impl Rec<'_> {
    /// The comparison levels of this record and `other` ([`Encodings::compare`]).
    fn compare(self, other: Rec<'_>, name_flip: f64) -> Levels {
        let both = |bit: u8| self.present & other.present & (1 << bit) != 0;
        let level =
            |d: f64, cuts: &[f64]| cuts.iter().position(|c| d >= *c).unwrap_or(cuts.len()) as u8;
        let name = if both(0) {
            level(
                dice_unflipped(self.name, other.name, name_flip),
                FIELDS[0].cuts,
            )
        } else {
            MISSING
        };
        let dob = if both(1) {
            match dob_agreement(self.dob, other.dob) {
                DobAgreement::Same => 0,
                DobAgreement::OneError => 1,
                DobAgreement::SameYear => 2,
                DobAgreement::Other => 3,
            }
        } else {
            MISSING
        };
        let passport = if both(2) {
            level(dice(self.passport, other.passport), FIELDS[2].cuts)
        } else {
            MISSING
        };
        let code = |x: u16, y: u16| match (x, y) {
            (0, _) | (_, 0) => MISSING,
            _ => (x != y) as u8,
        };
        Levels([
            name,
            dob,
            passport,
            code(self.nationality, other.nationality),
            code(self.sex as u16, other.sex as u16),
        ])
    }
}

/// What fuzzy linkage holds of every record: which encodings it has, its
/// name key, nationality and sex (13 bytes a record).
#[derive(Debug, Default)]
pub struct Light {
    /// Which encodings a record has ([`Encodings::present`]).
    pub present: Vec<u8>,
    /// Keyed hash of all name tokens (0: no name).
    pub name_key: Vec<u64>,
    /// Nationality code (0 unknown).
    pub nationality: Vec<u16>,
    /// Sex code (0 unknown).
    pub sex: Vec<u8>,
}

/// The filters of some of the records of a range, as read for comparing
/// them (a record not read has none here).
#[derive(Debug, Default)]
pub struct Filters {
    /// The first record of the range.
    from: usize,
    /// Per record of the range, its place here (`u32::MAX`: not read).
    slot: Vec<u32>,
    /// Per record read, [`STRIDE`] bytes: its name, date-of-birth and
    /// passport filters, then which it has, its sex and its nationality:
    /// what a comparison reads of a record, in one place.
    data: Vec<u8>,
}

/// Bytes a record read takes in [`Filters::data`].
const STRIDE: usize = NAME_LEN + DOB_LEN + PASSPORT_LEN + 4;

impl Filters {
    /// Empties these filters for the range `from..to` (keeping their
    /// memory, so that reading the next range touches no fresh page).
    pub fn reset(&mut self, from: usize, to: usize) {
        self.from = from;
        self.slot.clear();
        self.slot.resize(to - from, u32::MAX);
        self.data.clear();
    }

    /// Adds record `i`'s filters (zeros where it has none) and its codes
    /// ([`write_rec`]).
    pub fn push(
        &mut self,
        i: usize,
        name: Option<&[u8]>,
        dob: Option<&[u8]>,
        passport: Option<&[u8]>,
        codes: Codes,
    ) {
        let at = self.data.len();
        self.slot[i - self.from] = (at / STRIDE) as u32;
        self.data.resize(at + STRIDE, 0);
        write_rec(&mut self.data[at..], [name, dob, passport], codes);
    }

    /// Asks the processor to fetch record `i`'s place and bytes ahead of
    /// their use ([`prefetch`]): `far` its place only, else its bytes
    /// (their place fetched by an earlier call).
    fn prefetch(&self, i: usize, far: bool) {
        let at = i - self.from;
        if far {
            prefetch(&self.slot, at);
        } else if let Some(&s) = self.slot.get(at) {
            let s = s as usize * STRIDE;
            if s < self.data.len() {
                for line in (0..STRIDE).step_by(64).chain([STRIDE - 1]) {
                    prefetch(&self.data, s + line);
                }
            }
        }
    }

    /// Record `i` as compared (it must have been read).
    fn rec(&self, i: usize) -> Rec<'_> {
        let s = self.slot[i - self.from] as usize;
        debug_assert!(s != u32::MAX as usize, "record {i} was not read");
        let r = &self.data[s * STRIDE..(s + 1) * STRIDE];
        let (name, rest) = r.split_at(NAME_LEN);
        let (dob, rest) = rest.split_at(DOB_LEN);
        let (passport, codes) = rest.split_at(PASSPORT_LEN);
        Rec {
            present: codes[0],
            name,
            dob,
            passport,
            nationality: u16::from_le_bytes([codes[2], codes[3]]),
            sex: codes[1],
        }
    }
}

/// A record's codes: which encodings it has ([`Encodings::present`]), its
/// nationality and its sex.
type Codes = (u8, u16, u8);

/// Writes a record's name, date-of-birth and passport filters (zeros where
/// it has none) and its codes into `out` ([`STRIDE`] bytes).
fn write_rec(out: &mut [u8], filters: [Option<&[u8]>; 3], (present, nationality, sex): Codes) {
    let mut at = 0;
    for (f, len) in filters.into_iter().zip([NAME_LEN, DOB_LEN, PASSPORT_LEN]) {
        match f {
            Some(f) if f.len() == len => out[at..at + len].copy_from_slice(f),
            _ => out[at..at + len].fill(0),
        }
        at += len;
    }
    let [n0, n1] = nationality.to_le_bytes();
    out[at..at + 4].copy_from_slice(&[present, sex, n0, n1]);
}

/// Bytes a record's filters take when read (name, date of birth and
/// passport filters, its codes, and its slot).
pub const FILTER_BYTES: usize = STRIDE + 4;

/// The filters fuzzy linkage holds at once by default: about 2.3 million
/// records'. A form whose records' filters fit is read once and compared
/// in one pass; a larger one is compared one range of records at a time
/// against itself and every later record, those read again from the drops
/// a chunk at a time (docs/linkage.md, "Memory").
pub const FILTER_BUDGET: usize = (crate::config::DEFAULT_FUZZY_MEMORY_MIB as usize) << 20;

/// Where fuzzy linkage reads records' encodings from: held in memory
/// ([`Encodings`]) or read from the drops ([`DropEncodings`]) when wanted,
/// a range of records at a time.
pub trait Source: Sync {
    /// How many records.
    fn len(&self) -> usize;

    /// Whether there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Reads into `out` the filters of the records of `from..to` for which
    /// `keep` holds; with `light`, also fills in every record's
    /// [`Light`] columns (sized for every record by the caller).
    fn read(
        &self,
        from: usize,
        to: usize,
        keep: &(dyn Fn(usize) -> bool + Sync),
        light: Option<&mut Light>,
        out: &mut Filters,
    ) -> Result<()>;

    /// Appends the [`entry`] of every blocking key in part `part` of
    /// the key space (its top bits; [`KEY_PARTS`] parts), in any order,
    /// each record's keys distinct.
    fn block_keys(&self, part: u64, out: &mut Vec<u128>) -> Result<()>;

    /// The first record at or after `i` that begins a new read (a drop's
    /// first record): ranges cut there read no drop twice.
    fn boundary(&self, i: usize) -> usize {
        i
    }
}

/// A blocking entry: key `k` of record `i`, in the high 64 bits and the low
/// 32, with room between for the record's nationality and sex, so that
/// entries sort by key, then nationality and sex, then record.
fn entry(k: u64, i: usize) -> u128 {
    u128::from(k) << 64 | i as u128
}

/// Whether blocking key `k` lies in part `part` of the key space.
fn in_part(k: u64, part: u64) -> bool {
    k >> (64 - KEY_PARTS.trailing_zeros()) == part
}

impl Source for Encodings {
    fn len(&self) -> usize {
        Encodings::len(self)
    }

    fn read(
        &self,
        from: usize,
        to: usize,
        keep: &(dyn Fn(usize) -> bool + Sync),
        light: Option<&mut Light>,
        out: &mut Filters,
    ) -> Result<()> {
        out.reset(from, to);
        for i in (from..to).filter(|&i| keep(i)) {
            let r = self.rec(i);
            let codes = (r.present, r.nationality, r.sex);
            out.push(i, Some(r.name), Some(r.dob), Some(r.passport), codes);
        }
        if let Some(light) = light {
            for i in from..to {
                light.present[i] = self.present[i];
                light.name_key[i] = self.name_key[i];
                light.nationality[i] = self.nationality[i];
                light.sex[i] = self.sex[i];
            }
        }
        Ok(())
    }

    fn block_keys(&self, part: u64, out: &mut Vec<u128>) -> Result<()> {
        for i in 0..Encodings::len(self) {
            out.extend(
                self.blocks_of(i)
                    .iter()
                    .filter(|&&k| in_part(k, part))
                    .map(|&k| entry(k, i)),
            );
        }
        Ok(())
    }
}

/// A field level meaning "one of the two records does not have it".
pub const MISSING: u8 = u8::MAX;

/// One compared field: its name, the Dice cuts between its levels (level
/// 0 is at least the first cut; the last level is below every cut; a field
/// without cuts has its levels from [`Encodings::compare`]), the names of
/// the levels, and how many of the first levels count as strong agreement.
pub struct Field {
    /// The field's name.
    pub name: &'static str,
    /// Lower bounds of the Dice coefficient of each level but the last.
    pub cuts: &'static [f64],
    /// The levels' names.
    pub levels: &'static [&'static str],
    /// Levels below this agree strongly (0: the field never identifies).
    pub strong: u8,
}

/// The compared fields, in [`Levels`] order.
pub const FIELDS: [Field; 5] = [
    Field {
        name: "name",
        cuts: &[0.85, 0.7, 0.55],
        levels: &["dice>=0.85", "dice>=0.70", "dice>=0.55", "other"],
        strong: 2,
    },
    Field {
        name: "date_of_birth",
        cuts: &[],
        levels: &["same", "one_error", "same_year", "other"],
        strong: 2,
    },
    Field {
        name: "passport",
        cuts: &[0.95, 0.65],
        levels: &["dice>=0.95", "dice>=0.65", "other"],
        strong: 2,
    },
    Field {
        name: "nationality",
        cuts: &[],
        levels: &["same", "different"],
        strong: 0,
    },
    Field {
        name: "sex",
        cuts: &[],
        levels: &["same", "different"],
        strong: 0,
    },
];

/// The passport field's level for two numbers that are both given and not
/// close: two documents.
const PASSPORT_OTHER: u8 = 2;

/// The level of each field for one pair ([`MISSING`] when either record
/// lacks it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Levels(pub [u8; 5]);

impl Levels {
    /// The pattern's index: each field's level, or its level count when
    /// missing, in mixed radix.
    fn index(self) -> usize {
        let mut i = 0;
        for (f, l) in FIELDS.iter().zip(self.0) {
            let n = f.levels.len() + 1;
            let l = if l == MISSING {
                f.levels.len()
            } else {
                l as usize
            };
            i = i * n + l;
        }
        i
    }

    fn of_index(mut i: usize) -> Levels {
        let mut out = [0u8; 5];
        for (k, f) in FIELDS.iter().enumerate().rev() {
            let n = f.levels.len() + 1;
            let l = i % n;
            i /= n;
            out[k] = if l == f.levels.len() {
                MISSING
            } else {
                l as u8
            };
        }
        Levels(out)
    }

    /// How many identifying fields agree strongly.
    pub fn strong_fields(self) -> u32 {
        FIELDS
            .iter()
            .zip(self.0)
            .filter(|(f, l)| *l != MISSING && *l < f.strong)
            .count() as u32
    }

    /// Whether an identifying field agrees at its top level (the same name,
    /// date or passport number, give or take the hardening's noise): two
    /// fields each one error apart do not make a link.
    pub fn one_exact(self) -> bool {
        self.0[..3].contains(&0)
    }

    /// Whether the two records hold two different passport numbers.
    pub fn passports_differ(self) -> bool {
        self.0[2] == PASSPORT_OTHER
    }
}

fn patterns() -> usize {
    FIELDS.iter().map(|f| f.levels.len() + 1).product()
}

/// Settings of fuzzy linkage.
#[derive(Debug, Clone, Serialize)]
pub struct Params {
    /// Blocks with more records than this are split by nationality and
    /// sex, and parts still larger are not compared (a blocking key that
    /// common says little); the pairs they hold are compared only through
    /// the smaller blocks they share. This keeps the pairs compared in
    /// proportion to the records.
    pub max_block: usize,
    /// Posterior match probability a pair needs to be linked.
    pub min_posterior: f64,
    /// Identifying fields (name, date of birth, passport) that must agree
    /// strongly for a pair to be linked by score.
    pub min_strong_fields: u32,
    /// Most exact-key groups fuzzy links may join into one person.
    pub max_parts: u32,
    /// Random pairs drawn to estimate `u`.
    pub random_pairs: usize,
    /// EM iterations.
    pub iterations: usize,
    /// Whether an exactly equal name weighs by how common the name is.
    pub name_frequency: bool,
    /// The probability with which the drops' name filters had each bit
    /// flipped (the format's hardening, [`NAME_FLIP`]); comparisons take
    /// its expected effect back out.
    pub name_flip: f64,
    /// Bytes of filters held at once ([`FILTER_BUDGET`]): how the work is
    /// done, not what it finds, so the manifest leaves it out.
    #[serde(skip)]
    pub filter_budget: usize,
}

impl Default for Params {
    fn default() -> Self {
        Params {
            max_block: 25,
            min_posterior: 0.99,
            min_strong_fields: 2,
            max_parts: 4,
            random_pairs: 200_000,
            iterations: 60,
            name_frequency: true,
            name_flip: NAME_FLIP,
            filter_budget: FILTER_BUDGET,
        }
    }
}

/// The fitted model, as the manifest reports it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Model {
    /// Whether `m` of name and date of birth came from exact-key pairs;
    /// when not, nothing is linked by score.
    pub fitted: bool,
    /// Where each field's `m` came from: pairs linked by an exact key, or
    /// the prior ([`M_PRIOR`]) when there were too few.
    pub m_source: BTreeMap<String, String>,
    /// Share of matches among the candidate pairs that no exact key joins
    /// (EM's lambda).
    pub match_share: f64,
    /// The prior of the posterior: log2 of the odds that a pair of encoded
    /// records is a match no exact key found (those matches over every
    /// pair).
    pub prior_log2_odds: f64,
    /// The posterior threshold.
    pub min_posterior: f64,
    /// The threshold as a match weight (log2 of the likelihood ratio; a
    /// pair is linked when its weight is at least this).
    pub threshold_weight: f64,
    /// Per field, per level: `m`, `u` and the weight log2(m/u).
    pub fields: BTreeMap<String, Vec<LevelWeight>>,
    /// Exactly equal names: how many distinct names (by their keyed hash)
    /// the records hold, over how many exact-key groups, and the weight of
    /// agreeing on the rarest and on the most common of them.
    pub name_frequency: Option<NameFrequency>,
}

/// How the weight of an exactly equal name follows the name's frequency.
#[derive(Debug, Clone, Default, Serialize)]
pub struct NameFrequency {
    /// Distinct names.
    pub distinct_names: u64,
    /// Exact-key groups with a name (the denominator of a name's share).
    pub groups_with_names: u64,
    /// Weight of agreeing on a name held by two groups.
    pub rarest_weight: f64,
    /// Weight of agreeing on the most common name.
    pub most_common_weight: f64,
}

/// One level of one field.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LevelWeight {
    /// The level.
    pub level: String,
    /// P(level | match).
    pub m: f64,
    /// P(level | non-match).
    pub u: f64,
    /// log2(m / u).
    pub weight: f64,
}

/// What fuzzy linkage found, for the manifest and `link --stats`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FuzzyReport {
    /// Whether the links were used (the report's `fuzzy_linkage`); when
    /// not, the model was fitted and reported only.
    pub linked: bool,
    /// The settings.
    pub params: Option<Params>,
    /// The fitted model.
    pub model: Model,
    /// Records that carry encodings (drops of format 2).
    pub encoded_records: u64,
    /// Blocks larger than `max_block`, not compared.
    pub oversized_blocks: u64,
    /// Candidate pairs compared.
    pub candidate_pairs: u64,
    /// Of which already joined by exact keys.
    pub candidate_pairs_joined_by_exact_keys: u64,
    /// Candidate pairs not joined by exact keys at or above the threshold.
    pub pairs_above_threshold: u64,
    /// Of those, pairs left out because two passport numbers disagree.
    pub refused_passports_differ: u64,
    /// Of those, pairs left out because fewer than `min_strong_fields`
    /// identifying fields agree strongly, or none at its top level.
    pub refused_too_few_strong_fields: u64,
    /// Fuzzy links that joined two exact-key groups.
    pub fuzzy_links: u64,
    /// Links above the threshold refused by the chaining guard.
    pub refused_by_chaining_guard: u64,
    /// Histogram of the match weights of candidate pairs that no exact key
    /// joins: (lower bound, pairs), in bins of 2.
    pub weight_histogram: Vec<(i32, u64)>,
}

/// A fuzzy edge: two records and the pair's match weight.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Edge {
    /// First record.
    pub a: u32,
    /// Second record.
    pub b: u32,
    /// Match weight (log2 of the likelihood ratio).
    pub weight: f64,
}

/// The outcome of fuzzy linkage over one form's records.
#[derive(Debug, Clone, Default)]
pub struct FuzzyLinks {
    /// Links accepted: each joins two exact-key groups.
    pub accepted: Vec<Edge>,
    /// Links above the threshold that the chaining guard refused.
    pub refused: Vec<Edge>,
    /// The report.
    pub report: FuzzyReport,
    /// How many ranges the records were compared in (1: every record's
    /// filters were held at once).
    pub ranges: usize,
    /// Each record's group: the smallest record of those its exact keys
    /// and the accepted links join it to ([`super::link::link_groups`]).
    pub groups: Vec<u32>,
}

/// Parts of the key space the blocking keys are sorted in, one after the
/// other (a power of two).
const KEY_PARTS: u64 = 2;

/// A nationality and sex code pair: what splits a block that is too large.
fn nat_sex(light: &Light, i: u32) -> u32 {
    (light.nationality[i as usize] as u32) << 8 | light.sex[i as usize] as u32
}

/// The blocks that are compared, found once for the whole form.
///
/// A blocking key held by at most `max_block` records is one block. A
/// larger one is split by nationality and sex (codes the secretariat
/// holds), and each part of at most `max_block` records is a block; larger
/// parts are not compared (a key that common says little, and comparing
/// it would grow with the square of the records). So the pairs compared
/// grow in proportion to the records, however many there are.
struct Blocks {
    /// The records of the compared blocks, block after block, each block's
    /// in the order of the records.
    members: Vec<u32>,
    /// The compared blocks: ranges of `members`.
    runs: Vec<(u32, u32)>,
    /// The compared blocks record `i` is in, by number (its place in
    /// `runs` plus one), ascending: `of[start[i]..start[i + 1]]`.
    start: Vec<u32>,
    of: Vec<u32>,
    /// Blocking keys too common to compare even when split.
    oversized: u64,
}

impl Blocks {
    fn new(src: &dyn Source, light: &Light, max_block: usize) -> Result<Blocks> {
        let n = src.len();
        let mut blocks = Blocks {
            members: Vec::new(),
            runs: Vec::new(),
            start: Vec::new(),
            of: Vec::new(),
            oversized: 0,
        };
        // The keys are read and sorted a part of the key space at a time,
        // so that only half of the (key, record) entries is held at once
        // (at 10 million records a half is 34 million entries, 525 MiB; a
        // quarter cost two more reads of the keys, 1.3 s); the parts share
        // one buffer (fresh pages are dear: each is cleared when first
        // touched).
        let mut entries = Vec::new();
        for part in 0..KEY_PARTS {
            entries.clear();
            src.block_keys(part, &mut entries)?;
            entries
                .par_iter_mut()
                .for_each(|e: &mut u128| *e |= u128::from(nat_sex(light, *e as u32)) << 32);
            blocks.add_part(max_block, &mut entries);
        }
        drop(entries);
        // Each block's records in their order, so that the records of a
        // range are a slice of it; and each record's blocks, ascending:
        // every (record, block) word, sorted. A stretch of blocks a task.
        let mut words = vec![0u64; blocks.members.len()];
        {
            let runs = &blocks.runs;
            let stretches: Vec<Range<usize>> = (0..runs.len())
                .step_by(1 << 12)
                .map(|from| from..(from + (1 << 12)).min(runs.len()))
                .collect();
            let members = || {
                stretches
                    .iter()
                    .map(|ids| runs[ids.start].0 as usize..runs[ids.end - 1].1 as usize)
            };
            let pieces = run_pieces(&mut blocks.members, 0, members())
                .into_iter()
                .zip(run_pieces(&mut words, 0, members()));
            stretches
                .par_iter()
                .zip(pieces.collect::<Vec<_>>())
                .for_each(|(ids, (members, words))| {
                    let base = runs[ids.start].0;
                    for id in ids.clone() {
                        let (s, e) = ((runs[id].0 - base) as usize, (runs[id].1 - base) as usize);
                        members[s..e].sort_unstable();
                        for (w, &r) in words[s..e].iter_mut().zip(&members[s..e]) {
                            *w = u64::from(r) << 32 | (id as u64 + 1);
                        }
                    }
                });
        }
        super::link::sort_words(&mut words);
        let mut start = vec![0u32; n + 1];
        let mut k = 0;
        for (r, s) in start.iter_mut().enumerate() {
            while k < words.len() && ((words[k] >> 32) as usize) < r {
                k += 1;
            }
            *s = k as u32;
        }
        let of: Vec<u32> = words.into_iter().map(|w| w as u32).collect();
        blocks.start = start;
        blocks.of = of;
        Ok(blocks)
    }

    /// Finds the compared blocks among `entries` (key, nationality and
    /// sex, record).
    fn add_part(&mut self, max_block: usize, entries: &mut [u128]) {
        // Sorted by key alone (a block's records are put in order
        // afterwards), in parallel: many keys are shared, and a radix
        // sort of the whole entries goes through every byte of theirs. A
        // block too large is sorted whole to be split.
        entries.par_sort_unstable_by_key(|&e| (e >> 64) as u64);
        let key = |e: u128| (e >> 64) as u64;
        let nat_sex = |e: u128| (e >> 32) as u32;
        let mut runs: Vec<(u32, u32)> = Vec::new();
        let mut start = 0;
        for i in 1..=entries.len() {
            if i < entries.len() && key(entries[i]) == key(entries[start]) {
                continue;
            }
            let n = i - start;
            if n <= max_block {
                if n > 1 {
                    runs.push((start as u32, i as u32));
                }
            } else {
                // Split by nationality and sex.
                entries[start..i].sort_unstable();
                let mut whole = true;
                let mut s = start;
                for j in start + 1..=i {
                    if j < i && nat_sex(entries[j]) == nat_sex(entries[s]) {
                        continue;
                    }
                    let m = j - s;
                    if m > max_block {
                        whole = false;
                    } else if m > 1 {
                        runs.push((s as u32, j as u32));
                    }
                    s = j;
                }
                self.oversized += u64::from(!whole);
            }
            start = i;
        }
        for (s, e) in runs {
            let from = self.members.len() as u32;
            self.members
                .extend(entries[s as usize..e as usize].iter().map(|&e| e as u32));
            self.runs.push((from, self.members.len() as u32));
        }
    }

    fn ids_of(&self, i: u32) -> &[u32] {
        &self.of[self.start[i as usize] as usize..self.start[i as usize + 1] as usize]
    }

    /// The records that some compared pair needs read: those of blocks
    /// holding records of more than one exact-key group (`root`); a block
    /// of one group's records compares nothing.
    fn needed(&self, root: &[u32]) -> Vec<bool> {
        let mut needed = vec![false; self.start.len() - 1];
        for &(s, e) in &self.runs {
            let block = &self.members[s as usize..e as usize];
            let r = root[block[0] as usize];
            if block.iter().any(|&x| root[x as usize] != r) {
                for &x in block {
                    needed[x as usize] = true;
                }
            }
        }
        needed
    }

    /// Whether `a` and `b` share a compared block numbered below `id`.
    fn share_earlier(&self, a: u32, b: u32, id: u32) -> bool {
        let ib = self.ids_of(b);
        self.ids_of(a)
            .iter()
            .take_while(|&&k| k < id)
            .any(|k| ib.contains(k))
    }

    /// Calls `f` on every pair of records that share a compared block,
    /// once (in the first block they share), in parallel; folds the
    /// results with `reduce`. `ahead(record, far)` is called on the
    /// records of the blocks a little ahead of the one whose pairs are
    /// taken, to [`prefetch`] what `f` will read of them: with `far` for
    /// the block after next, then without it for the next.
    fn pairs<T: Send>(
        &self,
        init: impl Fn() -> T + Sync + Send,
        f: impl Fn(&mut T, u32, u32) + Sync + Send,
        ahead: impl Fn(u32, bool) + Sync + Send,
        reduce: impl Fn(T, T) -> T + Sync + Send,
    ) -> T {
        self.pairs_fold(&init, f, ahead).reduce(&init, reduce)
    }

    /// [`Blocks::pairs`] before the results are folded into one.
    fn pairs_fold<T: Send>(
        &self,
        init: impl Fn() -> T + Sync + Send,
        f: impl Fn(&mut T, u32, u32) + Sync + Send,
        ahead: impl Fn(u32, bool) + Sync + Send,
    ) -> impl ParallelIterator<Item = T> {
        const SPAN: u32 = 256;
        let count = self.runs.len() as u32;
        let block = move |id: u32| {
            let (s, e) = self.runs.get(id as usize - 1).copied().unwrap_or((0, 0));
            &self.members[s as usize..e as usize]
        };
        (0..count.div_ceil(SPAN))
            .into_par_iter()
            .fold(init, move |mut acc, span| {
                let ids = span * SPAN + 1..=((span + 1) * SPAN).min(count);
                let end = *ids.end();
                let fetch = |id: u32, far: bool| {
                    if id <= end {
                        for &r in block(id) {
                            if far {
                                prefetch(&self.start, r as usize);
                            } else if let Some(&at) = self.start.get(r as usize) {
                                prefetch(&self.of, at as usize);
                            }
                            ahead(r, far);
                        }
                    }
                };
                fetch(*ids.start(), true);
                fetch(*ids.start() + 1, true);
                fetch(*ids.start(), false);
                for id in ids {
                    fetch(id + 2, true);
                    fetch(id + 1, false);
                    let block = block(id);
                    for (x, &a) in block.iter().enumerate() {
                        for &b in &block[x + 1..] {
                            if !self.share_earlier(a, b, id) {
                                f(&mut acc, a, b);
                            }
                        }
                    }
                }
                acc
            })
    }
}

/// Per field, the share of each level among `counts` (patterns), with half
/// a pair added to every level so that no level has probability 0.
fn level_shares(counts: &[f64]) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = FIELDS.iter().map(|f| vec![0.5; f.levels.len()]).collect();
    for (p, &c) in counts.iter().enumerate() {
        if c == 0.0 {
            continue;
        }
        for (f, &l) in Levels::of_index(p).0.iter().enumerate() {
            if l != MISSING {
                out[f][l as usize] += c;
            }
        }
    }
    for f in &mut out {
        let total: f64 = f.iter().sum();
        for x in f.iter_mut() {
            *x /= total;
        }
    }
    out
}

/// log2 of the likelihood ratio of a pattern under `m` and `u`.
fn log_ratio(levels: Levels, m: &[Vec<f64>], u: &[Vec<f64>]) -> f64 {
    let mut w = 0.0;
    for (f, &l) in levels.0.iter().enumerate() {
        if l != MISSING {
            w += (m[f][l as usize] / u[f][l as usize]).log2();
        }
    }
    w
}

/// Pairs an exact key must provide before a field's `m` is taken from them.
const MIN_LABELLED: f64 = 30.0;

/// `m` of each field when too few exact-key pairs hold it: most matches
/// agree, a few were typed with an error.
pub const M_PRIOR: [&[f64]; 5] = [
    &[0.88, 0.1, 0.01, 0.01],
    &[0.85, 0.1, 0.04, 0.01],
    &[0.8, 0.1, 0.1],
    &[0.97, 0.03],
    &[0.98, 0.02],
];

/// The pairs an exact key links, as fuzzy linkage learns `m` from them:
/// each encoded record with the next one of the same key (at most `limit`
/// pairs).
fn labelled(keys: &[u128], present: &[u8], limit: usize) -> Vec<(u32, u32)> {
    let order = KeyOrder::new(keys.len(), &|i| keys[i], |i| present[i] != 0);
    order
        .equal_neighbours(|i| keys[i])
        .take(limit)
        .map(|(a, b)| (a as u32, b as u32))
        .collect()
}

/// Pattern counts of `pairs`, read from `filters`.
fn pattern_counts(pairs: &[(u32, u32)], filters: &Filters, name_flip: f64) -> Vec<f64> {
    let mut counts = vec![0f64; patterns()];
    for &(a, b) in pairs {
        let (a, b) = (filters.rec(a as usize), filters.rec(b as usize));
        counts[a.compare(b, name_flip).index()] += 1.0;
    }
    counts
}

/// Numbers the distinct names of `name_key` (0: no name) from 1, and
/// counts the exact-key groups (`root`) that hold each: each record's
/// name's number, each number's groups (index 0 unused), and how many
/// groups hold a name. A number takes half a key's bytes, and a count is
/// found without a map.
fn name_groups(name_key: &[u64], root: &[u32]) -> (Vec<u32>, Vec<u32>, usize) {
    let mut by_name: Vec<(u64, u32)> = name_key
        .iter()
        .enumerate()
        .filter(|&(_, &k)| k != 0)
        .map(|(i, &k)| (k, i as u32))
        .collect();
    by_name.par_sort_unstable();
    let mut id = vec![0u32; name_key.len()];
    let mut names = 0u32;
    for run in by_name.chunk_by(|x, y| x.0 == y.0) {
        names += 1;
        for &(_, i) in run {
            id[i as usize] = names;
        }
    }
    drop(by_name);
    // (name, group) words, each once.
    let mut groups: Vec<u64> = id
        .iter()
        .zip(root)
        .filter(|&(&n, _)| n != 0)
        .map(|(&n, &r)| u64::from(n) << 32 | u64::from(r))
        .collect();
    super::link::sort_words(&mut groups);
    groups.dedup();
    let mut count = vec![0u32; names as usize + 1];
    for w in &groups {
        count[(w >> 32) as usize] += 1;
    }
    let mut roots: Vec<u32> = groups.iter().map(|&w| w as u32).collect();
    drop(groups);
    roots.par_sort_unstable();
    roots.dedup();
    (id, count, roots.len())
}

/// Weights are counted in bins of 1/16 bit, from -256 to 256 bits.
const WEIGHT_BINS: usize = 8192;

fn weight_bin(w: f32) -> usize {
    ((w * 16.0).round() as i64 + WEIGHT_BINS as i64 / 2).clamp(0, WEIGHT_BINS as i64 - 1) as usize
}

/// The match share among pairs counted by weight bin (EM with `m` and `u`
/// fixed).
fn match_share(bins: &[u64], iterations: usize) -> f64 {
    let total: u64 = bins.iter().sum();
    let bins: Vec<(f64, f64)> = bins
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(b, &c)| {
            let w = (b as f64 - (WEIGHT_BINS / 2) as f64) / 16.0;
            (w.clamp(-200.0, 200.0).exp2(), c as f64)
        })
        .collect();
    let mut lambda = 0.1;
    for _ in 0..iterations {
        let odds = lambda / (1.0 - lambda);
        let matched: f64 = bins
            .iter()
            .map(|&(ratio, c)| {
                let r = odds * ratio;
                c * r / (1.0 + r)
            })
            .sum();
        lambda = (matched / total as f64).clamp(1e-9, 1.0 - 1e-9);
    }
    lambda
}

/// What one pass over the candidate pairs gathers.
struct Scan {
    /// Candidate pairs, and of those joined by exact keys already.
    pairs: u64,
    joined: u64,
    /// Pairs no exact key joins, by weight bin ([`weight_bin`]).
    bins: Vec<u64>,
    /// The same pairs by weight, in bins of 2 bits from -256.
    histogram: Vec<u64>,
    /// Pairs at or above the lowest threshold any match share could give.
    kept: Vec<(Edge, u16)>,
}

impl Scan {
    fn new() -> Scan {
        Scan {
            pairs: 0,
            joined: 0,
            bins: vec![0; WEIGHT_BINS],
            histogram: vec![0; 256],
            kept: Vec::new(),
        }
    }

    fn merge(mut self, other: Scan) -> Scan {
        self.pairs += other.pairs;
        self.joined += other.joined;
        for (x, y) in self.bins.iter_mut().zip(&other.bins) {
            *x += y;
        }
        for (x, y) in self.histogram.iter_mut().zip(&other.histogram) {
            *x += y;
        }
        self.kept.extend(other.kept);
        self
    }
}

/// Finds fuzzy links among records that carry encodings, held in memory
/// ([`fuzzy_links_from`]). `key_passport`
/// and `key_name_dob` are the records' exact keys (as in
/// [`super::link::Records`]), so that pairs already joined by them are not
/// counted as fuzzy links and the chaining guard knows the exact-key
/// groups.
pub fn fuzzy_links(
    key_passport: &[u128],
    key_name_dob: &[u128],
    enc: &Encodings,
    params: &Params,
) -> FuzzyLinks {
    fuzzy_links_from(key_passport.to_vec(), key_name_dob.to_vec(), enc, params)
        .expect("encodings held in memory are read without error")
}

/// Finds fuzzy links among the records of `src` ([`fuzzy_links`]),
/// holding at most about `params.filter_budget` bytes of filters at once:
/// when every record's filters fit, they are read once and the blocks
/// compared as they are found; otherwise the pairs to score are found
/// first and scored a range of records at a time (docs/linkage.md,
/// "Memory"). The links are the same either way. The exact keys are
/// taken, and freed once the exact-key groups and the pairs `m` is learnt
/// from are found (at 10 million records they are 320 MB the filters can
/// have); [`FuzzyLinks::groups`] gives the groups the link needs instead.
pub fn fuzzy_links_from(
    key_passport: Vec<u128>,
    key_name_dob: Vec<u128>,
    src: &dyn Source,
    params: &Params,
) -> Result<FuzzyLinks> {
    let n = src.len();
    let budget = params.filter_budget;
    assert_eq!(n, key_passport.len());
    let t = std::time::Instant::now();
    // The exact-key groups.
    let forest = Forest::new(n);
    let mut words = Vec::new();
    forest.unite_keys(&key_passport, None, &mut words);
    forest.unite_keys(&key_name_dob, None, &mut words);
    drop(words);
    let root = forest.roots();
    // Every record's light columns; and its filters too when all fit.
    let mut light = Light {
        present: vec![0; n],
        name_key: vec![0; n],
        nationality: vec![0; n],
        sex: vec![0; n],
    };
    let whole = n * FILTER_BYTES <= budget;
    let mut left = Filters::default();
    src.read(0, n, &|_| whole, Some(&mut light), &mut left)?;
    super::input::trace("fuzzy: exact groups and read the encodings", t);
    let t = std::time::Instant::now();
    let mut report = FuzzyReport {
        params: Some(params.clone()),
        encoded_records: light.present.iter().filter(|&&p| p != 0).count() as u64,
        ..Default::default()
    };
    let np = patterns();
    // u: level shares among random pairs of encoded records.
    let encoded: Vec<u32> = (0..n as u32)
        .filter(|&i| light.present[i as usize] != 0)
        .collect();
    let mut random = Vec::new();
    if encoded.len() > 1 {
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for _ in 0..params.random_pairs {
            let a = encoded[rng.random_range(0..encoded.len())];
            let b = encoded[rng.random_range(0..encoded.len())];
            if a != b {
                random.push((a, b));
            }
        }
    }
    let e = encoded.len() as f64;
    drop(encoded);
    // m: level shares among pairs that an exact key links, each field
    // from the pairs of the key that does not hold it (passport-key pairs
    // for name, date of birth, nationality and sex; name-and-birth-key
    // pairs for the passport), so that the key does not bias its own
    // field. A field with too few such pairs keeps its prior.
    let passport_pairs = labelled(&key_passport, &light.present, params.random_pairs);
    let name_dob_pairs = labelled(&key_name_dob, &light.present, params.random_pairs);
    drop((key_passport, key_name_dob));
    let (random, by_passport, by_name_dob) = {
        // The filters of these pairs' records, unless every record's are
        // held already.
        let mut some = Filters::default();
        let filters = if whole {
            &left
        } else {
            let mut wanted = vec![false; n];
            for &(a, b) in random.iter().chain(&passport_pairs).chain(&name_dob_pairs) {
                wanted[a as usize] = true;
                wanted[b as usize] = true;
            }
            src.read(0, n, &|i| wanted[i], None, &mut some)?;
            &some
        };
        (
            pattern_counts(&random, filters, params.name_flip),
            pattern_counts(&passport_pairs, filters, params.name_flip),
            pattern_counts(&name_dob_pairs, filters, params.name_flip),
        )
    };
    drop((passport_pairs, name_dob_pairs));
    let u = level_shares(&random);
    super::input::trace("fuzzy: random and labelled pairs", t);
    let t = std::time::Instant::now();
    let from_passport = level_shares(&by_passport);
    let from_name_dob = level_shares(&by_name_dob);
    let labelled_pairs = |counts: &[f64], f: usize| -> f64 {
        counts
            .iter()
            .enumerate()
            .filter(|&(p, _)| Levels::of_index(p).0[f] != MISSING)
            .map(|(_, c)| c)
            .sum()
    };
    let mut m_source = Vec::new();
    let m: Vec<Vec<f64>> = FIELDS
        .iter()
        .enumerate()
        .map(|(f, field)| {
            let (counts, shares, key) = if field.name == "passport" {
                (&by_name_dob, &from_name_dob, "name_dob")
            } else {
                (&by_passport, &from_passport, "passport")
            };
            if labelled_pairs(counts, f) >= MIN_LABELLED {
                m_source.push((
                    field.name.to_string(),
                    format!("pairs linked by the {key} key"),
                ));
                shares[f].clone()
            } else {
                m_source.push((field.name.to_string(), "prior".to_string()));
                M_PRIOR[f].to_vec()
            }
        })
        .collect();
    // How common each exactly equal name is: the exact-key groups that
    // hold it.
    let (name_id, name_groups, groups_with_names) = name_groups(&light.name_key, &root);
    light.name_key = Vec::new();
    super::input::trace("fuzzy: labelled pairs and name groups", t);
    let t = std::time::Instant::now();
    // Frequency weights: agreeing on exactly the same name weighs
    // log2(m / u_v), where u_v, the chance that another person has this
    // very name, is the share of the persons with a name who hold it
    // (besides the one the pair may be). A rare name says more than the
    // level's average, a common one less.
    let name_m = m[0][0];
    let level_weight = (m[0][0] / u[0][0]).log2();
    let adjust = |count: u32| {
        let share = (count.saturating_sub(1).max(1) as f64) / groups_with_names.max(1) as f64;
        (name_m / share).log2() - level_weight
    };
    let weight_of: Vec<f64> = (0..np)
        .map(|p| log_ratio(Levels::of_index(p), &m, &u))
        .collect();
    let weight = |a: u32, b: u32, l: Levels| -> f32 {
        // The names' numbers are looked up only for names that agree.
        let same_name = params.name_frequency && l.0[0] == 0 && {
            let ka = name_id[a as usize];
            ka != 0 && ka == name_id[b as usize]
        };
        let w = weight_of[l.index()]
            + if same_name {
                adjust(name_groups[name_id[a as usize] as usize])
            } else {
                0.0
            };
        w as f32
    };
    if params.name_frequency && name_groups.len() > 1 {
        let most = name_groups.iter().copied().max().unwrap_or(2);
        let base = (m[0][0] / u[0][0]).log2();
        report.model.name_frequency = Some(NameFrequency {
            distinct_names: name_groups.len() as u64 - 1,
            groups_with_names: groups_with_names as u64,
            rarest_weight: base + adjust(2),
            most_common_weight: base + adjust(most),
        });
    }
    // Without exact-key pairs to learn name and date-of-birth agreement
    // from, the model is a guess: pairs are scored and reported, but none
    // is linked.
    let fitted = ["name", "date_of_birth"]
        .iter()
        .all(|f| m_source.iter().any(|(n, s)| n == f && s != "prior"));
    // The prior of the posterior: the matches EM finds among the candidates
    // no exact key joins, over every pair of encoded records (u comes from
    // random pairs of them, not from candidates: blocking picked the
    // candidates by the same fields the weights score, so the candidates'
    // share would count that evidence twice, and more so the more records
    // there are).
    let threshold_at = |matches: f64| {
        let all_pairs = (e * (e - 1.0) / 2.0).max(matches + 1.0);
        let prior = (matches / (all_pairs - matches)).log2();
        let odds = (params.min_posterior / (1.0 - params.min_posterior)).log2();
        (prior, odds - prior)
    };
    // One pass over the candidate pairs, without holding them: pairs of an
    // exact-key group are counted and skipped; the others are scored,
    // counted by weight, and kept when they could reach the threshold
    // whatever the match share (the share is not known before they are
    // all counted).
    let blocks = Blocks::new(src, &light, params.max_block)?;
    report.oversized_blocks = blocks.oversized;
    super::input::trace("fuzzy: blocks", t);
    let t = std::time::Instant::now();
    let bound = blocks.runs.iter().map(|&(s, e)| {
        let k = (e - s) as f64;
        k * (k - 1.0) / 2.0
    });
    let lowest = threshold_at(bound.sum::<f64>().max(1.0)).1 as f32;
    // Scores a pair no exact key joins, `a` in `left` and `b` in `right`.
    let score = |left: &Filters, right: &Filters, acc: &mut Scan, a: u32, b: u32| {
        let l = left
            .rec(a as usize)
            .compare(right.rec(b as usize), params.name_flip);
        let w = weight(a, b, l);
        acc.bins[weight_bin(w)] += 1;
        acc.histogram[((w / 2.0).floor() as i64 + 128).clamp(0, 255) as usize] += 1;
        if fitted && w >= lowest {
            let edge = Edge {
                a,
                b,
                weight: w as f64,
            };
            acc.kept.push((edge, l.index() as u16));
        }
    };
    let mut scan = Scan::new();
    let mut range_count = 1;
    if whole {
        scan = blocks.pairs(
            Scan::new,
            |acc, a, b| {
                acc.pairs += 1;
                if root[a as usize] == root[b as usize] {
                    acc.joined += 1;
                } else {
                    score(&left, &left, acc, a, b);
                }
            },
            |r, far| {
                left.prefetch(r as usize, far);
                if !far {
                    prefetch(&root, r as usize);
                    prefetch(&name_id, r as usize);
                }
            },
            Scan::merge,
        );
        drop(blocks);
    } else {
        // Ranges of records of about equal numbers of records to read.
        // The pairs to score are found first, grouped by the range of
        // their first record and ordered by their second (8 bytes a pair:
        // far less than the blocks' records' filters). Then each range is
        // read and held while its pairs are scored, the records they meet
        // after it read a chunk at a time, in order.
        let needed = blocks.needed(&root);
        // What finding the pairs reads of a record: its exact-key group.
        let root_ahead = |r: u32, far: bool| {
            if !far {
                prefetch(&root, r as usize);
            }
        };
        let chunk = (budget / 16 / FILTER_BYTES).max(1);
        let most = (budget / FILTER_BYTES).saturating_sub(chunk).max(1);
        let lefts = ranges(&needed, 0, most, |i| src.boundary(i));
        range_count = lefts.len();
        // Counted first, then written straight into place: the pairs are
        // the largest thing held while filters are read.
        let (pairs, joined, per_range) = blocks.pairs(
            || (0u64, 0u64, vec![0usize; lefts.len()]),
            |acc, a, b| {
                acc.0 += 1;
                if root[a as usize] == root[b as usize] {
                    acc.1 += 1;
                } else {
                    acc.2[lefts.partition_point(|r| r.end <= a)] += 1;
                }
            },
            root_ahead,
            |mut x, y| {
                x.0 += y.0;
                x.1 += y.1;
                for (p, q) in x.2.iter_mut().zip(y.2) {
                    *p += q;
                }
                x
            },
        );
        (scan.pairs, scan.joined) = (pairs, joined);
        let slots: Vec<Vec<AtomicU64>> = per_range
            .iter()
            .map(|&c| (0..c).map(|_| AtomicU64::new(0)).collect())
            .collect();
        let cursors: Vec<AtomicUsize> = per_range.iter().map(|_| AtomicUsize::new(0)).collect();
        let flush = |buffer: &mut Vec<u64>, i: usize| {
            let at = cursors[i].fetch_add(buffer.len(), Ordering::Relaxed);
            for (slot, &w) in slots[i][at..at + buffer.len()].iter().zip(buffer.iter()) {
                slot.store(w, Ordering::Relaxed);
            }
            buffer.clear();
        };
        blocks
            .pairs_fold(
                || vec![Vec::with_capacity(1024); lefts.len()],
                |buffers: &mut Vec<Vec<u64>>, a, b| {
                    if root[a as usize] != root[b as usize] {
                        let i = lefts.partition_point(|r| r.end <= a);
                        buffers[i].push(u64::from(b) << 32 | u64::from(a));
                        if buffers[i].len() == 1024 {
                            flush(&mut buffers[i], i);
                        }
                    }
                },
                root_ahead,
            )
            .for_each(|mut buffers| {
                for (i, buffer) in buffers.iter_mut().enumerate() {
                    flush(buffer, i);
                }
            });
        drop(blocks);
        let mut found: Vec<Vec<u64>> = slots
            .into_iter()
            .map(|s| s.into_iter().map(AtomicU64::into_inner).collect())
            .collect();
        super::input::trace(
            &format!(
                "fuzzy: {} pairs to score of {} records, in {range_count} ranges",
                scan.pairs - scan.joined,
                needed.iter().filter(|&&x| x).count(),
            ),
            t,
        );
        let keep = |x: usize| needed[x];
        let mut right = Filters::default();
        let (mut reading, mut reads) = (std::time::Duration::ZERO, 0);
        for (i, l) in lefts.iter().enumerate() {
            // This range's pairs, by second record (and first).
            let mut words = std::mem::take(&mut found[i]);
            super::link::sort_words(&mut words);
            let r0 = std::time::Instant::now();
            src.read(l.start as usize, l.end as usize, &keep, None, &mut left)?;
            (reading, reads) = (reading + r0.elapsed(), reads + 1);
            let second = |w: &u64| (w >> 32) as u32;
            // The records of the pairs a few ahead are fetched while a
            // pair is scored (their places further ahead still).
            let score_all = |words: &[u64], right: &Filters| {
                words
                    .par_chunks(4096)
                    .fold(Scan::new, |mut acc, words| {
                        let ahead = |j: usize, far: bool| {
                            if let Some(&w) = words.get(j) {
                                let (a, b) = (w as u32 as usize, (w >> 32) as usize);
                                left.prefetch(a, far);
                                right.prefetch(b, far);
                                if !far {
                                    prefetch(&name_id, a);
                                    prefetch(&name_id, b);
                                }
                            }
                        };
                        for j in 0..AHEAD {
                            ahead(j, true);
                            ahead(j + AHEAD, true);
                            ahead(j, false);
                        }
                        for (j, &w) in words.iter().enumerate() {
                            ahead(j + 2 * AHEAD, true);
                            ahead(j + AHEAD, false);
                            score(&left, right, &mut acc, w as u32, (w >> 32) as u32);
                        }
                        acc
                    })
                    .reduce(Scan::new, Scan::merge)
            };
            let within = words.partition_point(|w| second(w) < l.end);
            scan = scan.merge(score_all(&words[..within], &left));
            let mut rest = &words[within..];
            for r in ranges(&needed, l.end as usize, chunk, |i| src.boundary(i)) {
                let here = rest.partition_point(|w| second(w) < r.end);
                if here == 0 {
                    continue;
                }
                // Only the records this range's pairs meet are kept.
                let mut paired = vec![false; (r.end - r.start) as usize];
                for &w in &rest[..here] {
                    paired[second(&w) as usize - r.start as usize] = true;
                }
                let keep = |i: usize| paired[i - r.start as usize];
                let r0 = std::time::Instant::now();
                src.read(r.start as usize, r.end as usize, &keep, None, &mut right)?;
                (reading, reads) = (reading + r0.elapsed(), reads + 1);
                scan = scan.merge(score_all(&rest[..here], &right));
                rest = &rest[here..];
            }
        }
        super::input::trace(
            &format!(
                "fuzzy: {reads} reads of ranges took {:.3} s",
                reading.as_secs_f64()
            ),
            t,
        );
    }
    drop(left);
    super::input::trace("fuzzy: scan the candidate pairs", t);
    report.candidate_pairs = scan.pairs;
    report.candidate_pairs_joined_by_exact_keys = scan.joined;
    let scored = scan.pairs - scan.joined;
    // The match share among the pairs no exact key joins, by EM with m and
    // u fixed.
    let lambda = if scored == 0 {
        0.5
    } else {
        match_share(&scan.bins, params.iterations)
    };
    let (prior, threshold_weight) = threshold_at((lambda * scored as f64).max(1.0));
    report.model = Model {
        fitted,
        m_source: m_source.into_iter().collect(),
        match_share: lambda,
        prior_log2_odds: prior,
        min_posterior: params.min_posterior,
        threshold_weight,
        fields: FIELDS
            .iter()
            .enumerate()
            .map(|(f, field)| {
                let levels = field
                    .levels
                    .iter()
                    .enumerate()
                    .map(|(l, name)| LevelWeight {
                        level: name.to_string(),
                        m: m[f][l],
                        u: u[f][l],
                        weight: (m[f][l] / u[f][l]).log2(),
                    })
                    .collect();
                (field.name.to_string(), levels)
            })
            .collect(),
        name_frequency: report.model.name_frequency.take(),
    };
    report.weight_histogram = scan
        .histogram
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c > 0)
        .map(|(b, &c)| ((b as i32 - 128) * 2, c))
        .collect();
    let mut above: Vec<Edge> = Vec::new();
    for (edge, l) in scan.kept {
        if edge.weight < threshold_weight {
            continue;
        }
        report.pairs_above_threshold += 1;
        let levels = Levels::of_index(l as usize);
        // Two passport numbers that are not close are two documents: never
        // linked on other fields' similarity.
        if levels.passports_differ() {
            report.refused_passports_differ += 1;
        } else if levels.strong_fields() < params.min_strong_fields
            || (!levels.one_exact() && levels.strong_fields() < 3)
        {
            report.refused_too_few_strong_fields += 1;
        } else {
            above.push(edge);
        }
    }
    // Strongest first; ties by records, so the result does not depend on
    // the order pairs were found in.
    above.sort_unstable_by(|x, y| {
        y.weight
            .total_cmp(&x.weight)
            .then((x.a, x.b).cmp(&(y.a, y.b)))
    });
    // The strongest links are added to the exact-key groups.
    drop(root);
    let mut parts: FxHashMap<u32, u32> = FxHashMap::default();
    let mut accepted = Vec::new();
    let mut refused = Vec::new();
    for e in above {
        let (ra, rb) = (forest.find(e.a), forest.find(e.b));
        if ra == rb {
            continue;
        }
        let (pa, pb) = (*parts.get(&ra).unwrap_or(&1), *parts.get(&rb).unwrap_or(&1));
        if pa + pb > params.max_parts {
            refused.push(e);
            continue;
        }
        forest.union(ra, rb);
        let root = forest.find(ra);
        parts.insert(root, pa + pb);
        accepted.push(e);
    }
    report.fuzzy_links = accepted.len() as u64;
    report.refused_by_chaining_guard = refused.len() as u64;
    Ok(FuzzyLinks {
        accepted,
        refused,
        report,
        ranges: range_count,
        groups: forest.into_roots(),
    })
}

/// Cuts the records from `from` on into ranges of at least `most` records
/// to read each (`needed`; the last may hold fewer), in order; each range
/// ends at the first `boundary` after its `most`-th record (where a drop's
/// records end: [`Source::boundary`]), so that no drop is read for two
/// ranges.
fn ranges(
    needed: &[bool],
    from: usize,
    most: usize,
    boundary: impl Fn(usize) -> usize,
) -> Vec<Range<u32>> {
    let n = needed.len();
    let mut out = Vec::new();
    let (mut start, mut count, mut i) = (from, 0, from);
    while i < n {
        count += usize::from(needed[i]);
        i += 1;
        if count >= most {
            let cut = boundary(i).clamp(i, n);
            out.push(start as u32..cut as u32);
            (start, count, i) = (cut, 0, cut);
        }
    }
    if start < n || out.is_empty() {
        out.push(start as u32..n as u32);
    }
    out
}

/// Reads the encodings of one drop file, in file order (nationality and
/// sex left unknown): `None` for a drop of format 1 (no encoding columns).
pub fn read_drop_encodings(path: &Path) -> Result<Option<Encodings>> {
    let Some(drop) = DropColumns::read(path, true, true)? else {
        return Ok(None);
    };
    let mut out = Encodings::new();
    let mut keys: Vec<u64> = Vec::new();
    for row in 0..drop.rows {
        let [name, dob, passport, name_key] = drop.filters(row);
        keys.clear();
        drop.keys(row, &mut keys)?;
        keys.sort_unstable();
        keys.dedup();
        out.push(
            name,
            dob,
            passport,
            name_key.map(|k| u64::from_be_bytes(k.try_into().expect("8 bytes"))),
            keys.iter().copied(),
            0,
            0,
        );
    }
    Ok(Some(out))
}

/// A form's encodings as its drops hold them, read when wanted: the
/// [`Source`] of a report's fuzzy linkage. Records come drop by drop (runs
/// of one drop's rows, in any order within the run).
pub struct DropEncodings<'a> {
    /// Per run of records from one drop: the drop (`None`: it carries no
    /// encodings), its first record and the end of the run.
    runs: Vec<(Option<std::path::PathBuf>, usize, usize)>,
    /// The records (each one's row in its drop, and its codes).
    records: &'a super::link::Records,
    /// The attribute columns of nationality and sex.
    nationality: Option<usize>,
    sex: Option<usize>,
}

/// The encodings of `records` (read from a store's `drops`, as
/// [`super::input::read_records`] read them), in the records' order; `None`
/// when no drop carries encodings (every drop of format 1). Only the
/// drops' footers are read here.
pub fn encodings_of<'a>(
    store: &crate::store::Store,
    drops: &[&super::input::InputDrop],
    records: &'a super::link::Records,
    attrs: &[super::input::Attr],
) -> Result<Option<DropEncodings<'a>>> {
    let path_of: FxHashMap<u32, std::path::PathBuf> = drops
        .iter()
        .map(|d| {
            let path = crate::store::ingest::resolve(store.root(), &d.path);
            (d.ledger_seq as u32, path)
        })
        .collect();
    // Whether each drop carries encodings (drops of format 1 do not).
    let encoded: FxHashMap<u32, bool> = drops
        .par_iter()
        .map(|d| {
            let seq = d.ledger_seq as u32;
            Ok((seq, has_encodings(&path_of[&seq])?))
        })
        .collect::<Result<_>>()?;
    if !encoded.values().any(|&e| e) {
        return Ok(None);
    }
    let mut runs: Vec<(Option<std::path::PathBuf>, usize, usize)> = Vec::new();
    let mut last = None;
    for (i, &seq) in records.drop_seq.iter().enumerate() {
        match runs.last_mut() {
            Some(r) if last == Some(seq) => r.2 = i + 1,
            _ => {
                let path = path_of
                    .get(&seq)
                    .filter(|_| encoded.get(&seq) == Some(&true));
                runs.push((path.cloned(), i, i + 1));
                last = Some(seq);
            }
        }
    }
    let attr = |name: &str| attrs.iter().position(|a| a.name == name);
    Ok(Some(DropEncodings {
        runs,
        records,
        nationality: attr("nationality"),
        sex: attr("sex"),
    }))
}

/// The encoding columns of one drop, batch by batch: the fixed-size ones
/// (name, date-of-birth and passport filters, name key) and the blocking
/// keys, each when asked for.
struct DropColumns {
    path: std::path::PathBuf,
    /// Each batch's first row.
    starts: Vec<usize>,
    fixed: Vec<[FixedSizeBinaryArray; 4]>,
    keys: Vec<BinaryArray>,
    rows: usize,
}

impl DropColumns {
    /// Reads the fixed-size columns (`fixed`) and the blocking keys
    /// (`keys`) of a drop; `None` for a drop of format 1.
    fn read(path: &Path, fixed: bool, keys: bool) -> Result<Option<DropColumns>> {
        let bad = |reason: String| Error::BadDrop {
            path: path.to_path_buf(),
            reason,
        };
        let (builder, Some(indices)) = open_drop(path)? else {
            return Ok(None);
        };
        // ENCODING_COLUMNS: the four fixed-size columns, then block_keys.
        let wanted = indices
            .iter()
            .enumerate()
            .filter(|&(c, _)| if c < 4 { fixed } else { keys })
            .map(|(_, &i)| i);
        let mask = ProjectionMask::roots(builder.parquet_schema(), wanted);
        let reader = builder
            .with_projection(mask)
            .build()
            .map_err(|e| bad(format!("cannot read ({e})")))?;
        let mut out = DropColumns {
            path: path.to_path_buf(),
            starts: Vec::new(),
            fixed: Vec::new(),
            keys: Vec::new(),
            rows: 0,
        };
        for batch in reader {
            let batch = batch.map_err(|e| bad(format!("damaged data ({e})")))?;
            if fixed {
                let column = |name: &str, len: usize| -> Result<FixedSizeBinaryArray> {
                    batch
                        .column_by_name(name)
                        .and_then(|c| c.as_any().downcast_ref::<FixedSizeBinaryArray>())
                        .filter(|a| a.value_length() as usize == len)
                        .cloned()
                        .ok_or_else(|| bad(format!("{name} has the wrong type")))
                };
                out.fixed.push([
                    column("enc_name", NAME_LEN)?,
                    column("enc_dob", DOB_LEN)?,
                    column("enc_passport", PASSPORT_LEN)?,
                    column("name_key", 8)?,
                ]);
            }
            if keys {
                out.keys.push(
                    batch
                        .column_by_name("block_keys")
                        .and_then(|c| c.as_any().downcast_ref::<BinaryArray>())
                        .cloned()
                        .ok_or_else(|| bad("block_keys has the wrong type".into()))?,
                );
            }
            out.starts.push(out.rows);
            out.rows += batch.num_rows();
        }
        Ok(Some(out))
    }

    /// The batch holding `row`, and the row's place in it.
    fn at(&self, row: usize) -> (usize, usize) {
        let b = self.starts.partition_point(|&start| start <= row) - 1;
        (b, row - self.starts[b])
    }

    /// Row `row`'s name, date-of-birth and passport filters and name key.
    fn filters(&self, row: usize) -> [Option<&[u8]>; 4] {
        let (b, i) = self.at(row);
        self.fixed[b]
            .each_ref()
            .map(|c| c.is_valid(i).then(|| c.value(i)))
    }

    /// Appends the [`entry`] of every blocking key in part `part` of each
    /// row whose record `record[row]` is (`u32::MAX`: none), row after row,
    /// a key a row has twice once.
    fn part_entries(&self, record: &[u32], part: u64, out: &mut Vec<u128>) -> Result<()> {
        for (keys, &base) in self.keys.iter().zip(&self.starts) {
            for j in 0..keys.len() {
                let i = record[base + j];
                if i == u32::MAX {
                    continue;
                }
                let first = out.len();
                for k in self.parse_keys(keys.value(j), base + j)? {
                    let e = entry(k, i as usize);
                    // A row has a few keys: a look back finds a repeat.
                    if in_part(k, part) && !out[first..].contains(&e) {
                        out.push(e);
                    }
                }
            }
        }
        Ok(())
    }

    /// Appends row `row`'s blocking keys to `out`.
    fn keys(&self, row: usize, out: &mut Vec<u64>) -> Result<()> {
        let (b, i) = self.at(row);
        out.extend(self.parse_keys(self.keys[b].value(i), row)?);
        Ok(())
    }

    /// The 8-byte blocking keys in row `row`'s `bytes`; an error naming
    /// the row when they are not whole keys.
    fn parse_keys<'b>(
        &self,
        bytes: &'b [u8],
        row: usize,
    ) -> Result<impl Iterator<Item = u64> + 'b> {
        if !bytes.len().is_multiple_of(8) {
            return Err(Error::BadDrop {
                path: self.path.clone(),
                reason: format!(
                    "row {}: block_keys is not a whole number of 8-byte keys",
                    row + 1
                ),
            });
        }
        Ok(bytes
            .chunks_exact(8)
            .map(|c| u64::from_be_bytes(c.try_into().expect("8 bytes"))))
    }
}

impl DropEncodings<'_> {
    /// The runs that overlap `from..to` and have a record that `wanted`
    /// holds, in groups of a few drops: each group is read in parallel
    /// with `read`, then handed to `take` whole (records and drop of each
    /// run), so that it can take the runs in parallel too.
    fn each_drop<T: Send + Sync>(
        &self,
        from: usize,
        to: usize,
        wanted: impl Fn(usize) -> bool,
        read: impl Fn(&Path) -> Result<T> + Sync,
        mut take: impl FnMut(&[(Range<usize>, Option<T>)]) -> Result<()>,
    ) -> Result<()> {
        let runs: Vec<_> = self
            .runs
            .iter()
            .map(|(p, s, e)| (p, *s.max(&from), *e.min(&to)))
            .filter(|&(_, s, e)| s < e && (s..e).any(&wanted))
            .collect();
        for group in runs.chunks(2 * rayon::current_num_threads()) {
            let read = group
                .par_iter()
                .map(|&(p, s, e)| Ok((s..e, p.as_ref().map(|p| read(p)).transpose()?)))
                .collect::<Result<Vec<_>>>()?;
            take(&read)?;
        }
        Ok(())
    }

    /// The codes and filters of record `i` (in `drop`, when it has the
    /// record's row): which encodings it has, its nationality and sex,
    /// then its name, date-of-birth, passport and name-key columns.
    fn record<'d>(
        &self,
        i: usize,
        drop: Option<&'d DropColumns>,
    ) -> (Codes, [Option<&'d [u8]>; 4]) {
        let row = self.records.pos[i] as usize;
        let filters = match drop {
            Some(d) if row < d.rows => d.filters(row),
            _ => [None; 4],
        };
        let present = u8::from(filters[0].is_some())
            | u8::from(filters[1].is_some()) << 1
            | u8::from(filters[2].is_some()) << 2;
        let codes = self.records.row(i);
        let nationality = self.nationality.map_or(0, |a| u16::from(codes[a]));
        let sex = self.sex.map_or(0, |a| codes[a]);
        ((present, nationality, sex), filters)
    }
}

impl Source for DropEncodings<'_> {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn boundary(&self, i: usize) -> usize {
        let r = self.runs.partition_point(|&(_, s, _)| s < i);
        self.runs.get(r).map_or(self.len(), |&(_, s, _)| s)
    }

    fn read(
        &self,
        from: usize,
        to: usize,
        keep: &(dyn Fn(usize) -> bool + Sync),
        mut light: Option<&mut Light>,
        out: &mut Filters,
    ) -> Result<()> {
        out.reset(from, to);
        let all = light.is_some();
        self.each_drop(
            from,
            to,
            |i| all || keep(i),
            |path| DropColumns::read(path, true, false),
            |group| {
                // Each run's records kept are given their places first, so
                // that the runs are taken in parallel, each into its own
                // part of the filters (and of the light columns).
                let kept: Vec<usize> = group
                    .par_iter()
                    .map(|(run, _)| run.clone().filter(|&i| keep(i)).count())
                    .collect();
                let first = out.data.len() / STRIDE;
                out.data
                    .resize((first + kept.iter().sum::<usize>()) * STRIDE, 0);
                let mut data = Vec::new();
                let mut rest = &mut out.data[first * STRIDE..];
                for &k in &kept {
                    let (piece, tail) = std::mem::take(&mut rest).split_at_mut(k * STRIDE);
                    data.push(piece);
                    rest = tail;
                }
                let runs = || group.iter().map(|(run, _)| run.clone());
                let slots = run_pieces(&mut out.slot, from, runs());
                let mut lights: Vec<Option<_>> = match light.as_deref_mut() {
                    Some(l) => run_pieces(&mut l.present, 0, runs())
                        .into_iter()
                        .zip(run_pieces(&mut l.name_key, 0, runs()))
                        .zip(run_pieces(&mut l.nationality, 0, runs()))
                        .zip(run_pieces(&mut l.sex, 0, runs()))
                        .map(Some)
                        .collect(),
                    None => group.iter().map(|_| None).collect(),
                };
                let mut at = first;
                let starts: Vec<usize> = kept
                    .iter()
                    .map(|&k| {
                        at += k;
                        at - k
                    })
                    .collect();
                group
                    .par_iter()
                    .zip(data)
                    .zip(slots)
                    .zip(lights.par_iter_mut())
                    .zip(starts)
                    .for_each(|((((run, data), slot), light), start)| {
                        let (run, drop) = run;
                        let mut next = 0;
                        for (j, i) in run.clone().enumerate() {
                            let (codes, [name, dob, passport, name_key]) =
                                self.record(i, drop.as_ref().and_then(Option::as_ref));
                            if let Some((((present, key), nationality), sex)) = light {
                                present[j] = codes.0;
                                key[j] = name_key.map_or(0, |k| {
                                    u64::from_be_bytes(k.try_into().expect("8 bytes"))
                                });
                                nationality[j] = codes.1;
                                sex[j] = codes.2;
                            }
                            if keep(i) {
                                slot[j] = (start + next) as u32;
                                write_rec(
                                    &mut data[next * STRIDE..(next + 1) * STRIDE],
                                    [name, dob, passport],
                                    codes,
                                );
                                next += 1;
                            }
                        }
                    });
                Ok(())
            },
        )
    }

    fn block_keys(&self, part: u64, out: &mut Vec<u128>) -> Result<()> {
        self.each_drop(
            0,
            self.len(),
            |_| true,
            |path| DropColumns::read(path, false, true),
            |group| {
                // Parsed run by run in parallel, each drop's rows in file
                // order, then gathered in order (the entries are sorted
                // afterwards: the order they come in does not matter).
                let parsed = group
                    .par_iter()
                    .map(|(run, drop)| {
                        let mut entries = Vec::new();
                        let Some(Some(drop)) = drop else {
                            return Ok(entries);
                        };
                        // The record of each row of the drop the run holds.
                        let mut record = vec![u32::MAX; drop.rows];
                        for i in run.clone() {
                            if let Some(r) = record.get_mut(self.records.pos[i] as usize) {
                                *r = i as u32;
                            }
                        }
                        drop.part_entries(&record, part, &mut entries)?;
                        Ok(entries)
                    })
                    .collect::<Result<Vec<_>>>()?;
                for entries in parsed {
                    out.extend(entries);
                }
                Ok(())
            },
        )
    }
}

/// Whether a drop file has the encoding columns (format 2 and later):
/// reads its footer only.
fn has_encodings(path: &Path) -> Result<bool> {
    Ok(open_drop(path)?.1.is_some())
}

/// Opens a drop file for reading (its footer is read) and finds its
/// encoding columns: `None` when it has not all of them (format 1).
fn open_drop(
    path: &Path,
) -> Result<(
    ParquetRecordBatchReaderBuilder<std::fs::File>,
    Option<Vec<usize>>,
)> {
    let bad = |reason: String| Error::BadDrop {
        path: path.to_path_buf(),
        reason,
    };
    let file = std::fs::File::open(path).map_err(|e| bad(format!("cannot read: {e}")))?;
    let options = ArrowReaderOptions::new().with_skip_arrow_metadata(true);
    let builder = ParquetRecordBatchReaderBuilder::try_new_with_options(file, options)
        .map_err(|e| bad(format!("not a readable Parquet file ({e})")))?;
    let schema = builder.schema();
    let indices = crate::drop::ENCODING_COLUMNS
        .iter()
        .map(|c| schema.index_of(c).ok())
        .collect::<Option<Vec<usize>>>();
    Ok((builder, indices))
}

/// The cluster sizes of a linkage: how many persons have each number of
/// records.
pub fn cluster_sizes(records_per_person: &[u32]) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for &r in records_per_person {
        *out.entry(r).or_default() += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::TaskForceKey;
    use crate::pseudonymise::encode::Encoder;
    use crate::pseudonymise::normalise::{name_tokens, parse_birth_date};

    #[test]
    fn pattern_index_round_trips() {
        for i in 0..patterns() {
            assert_eq!(Levels::of_index(i).index(), i);
        }
    }

    /// Synthetic people: `n` distinct ones with made-up names and a
    /// passport each. The first `typos` of them get a second record with a
    /// one-letter typo in the family name and no passport (no exact key
    /// links it); the next `typos` get a second record with the same
    /// passport (linked by the passport key), every third with a typo.
    fn people(
        n: usize,
        typos: usize,
        seed: u64,
        flip: f64,
    ) -> (Encodings, Vec<u32>, Vec<u128>, Vec<u128>) {
        let e = Encoder::new(&TaskForceKey::from_bytes([4; 32])).with_name_flip(flip);
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let syll = [
            "ka", "ri", "na", "to", "su", "me", "lo", "wi", "an", "di", "ra", "ti",
        ];
        let word = |rng: &mut ChaCha8Rng| -> String {
            (0..3)
                .map(|_| syll[rng.random_range(0..syll.len())])
                .collect()
        };
        let typo = |w: &str| -> String {
            let mut c: Vec<char> = w.chars().collect();
            c[2] = if c[2] == 'x' { 'y' } else { 'x' };
            c.into_iter().collect()
        };
        let mut enc = Encodings::new();
        let (mut truth, mut kp, mut kn) = (Vec::new(), Vec::new(), Vec::new());
        let mut push = |enc: &mut Encodings, f: &str, g: &str, dob: &str, pp: &str, who: u32| {
            let tokens = name_tokens(f, g);
            let x = e.encode(
                tokens.iter().map(String::as_str),
                parse_birth_date(dob).ok(),
                pp,
                &[(truth.len() % 251) as u8; 32],
            );
            enc.push(
                x.name.as_ref().map(|f| f.as_slice()),
                x.dob.as_ref().map(|f| f.as_slice()),
                x.passport.as_ref().map(|f| f.as_slice()),
                x.name_key,
                x.blocks().iter().copied(),
                1,
                1,
            );
            truth.push(who);
            kp.push(if pp.is_empty() { 0 } else { who as u128 + 1 });
            kn.push(0);
        };
        for who in 0..n as u32 {
            let (f, g) = (word(&mut rng), word(&mut rng));
            let dob = format!(
                "{}-{:02}-{:02}",
                rng.random_range(1960..2004),
                rng.random_range(1..13),
                rng.random_range(1..29)
            );
            let pp = format!("X{}", rng.random_range(1_000_000..9_999_999));
            push(&mut enc, &f, &g, &dob, &pp, who);
            let who_ = who as usize;
            if who_ < typos {
                push(&mut enc, &typo(&f), &g, &dob, "", who);
            } else if who_ < 2 * typos {
                let f2 = if who % 3 == 0 { typo(&f) } else { f.clone() };
                push(&mut enc, &f2, &g, &dob, &pp, who);
            }
        }
        (enc, truth, kp, kn)
    }

    #[test]
    fn typo_pairs_are_linked_and_distinct_people_are_not() {
        // The same people encoded with the hardening (as drops are made)
        // and without: comparing the hardened filters with the flips'
        // expected effect taken out links nearly as many pairs.
        let mut right_by_flip = Vec::new();
        for flip in [NAME_FLIP, 0.0] {
            let (enc, truth, kp, kn) = people(2000, 300, 1, flip);
            let params = Params {
                name_flip: flip,
                ..Params::default()
            };
            let links = fuzzy_links(&kp, &kn, &enc, &params);
            assert!(links.report.model.m_source["name"].contains("passport"));
            let right = links
                .accepted
                .iter()
                .filter(|e| truth[e.a as usize] == truth[e.b as usize])
                .count();
            let wrong = links.accepted.len() - right;
            // Most typo pairs are linked: the rest have a name Dice below
            // 0.85 (one letter of two six-letter words), which the model,
            // learning from exact-key pairs that nearly all reach 0.85,
            // does not weigh enough with a birth date alone.
            assert!(
                right >= 225,
                "{right} of 300 typo pairs linked (flip {flip})"
            );
            // Same birthday and a shared name token do occur among distinct
            // people here; at most one such link per fifty right ones.
            assert!(wrong * 50 <= right, "{wrong} links of distinct people");
            assert!(links.report.model.match_share > 0.0);
            assert!(links.report.model.fields["name"][0].weight > 3.0);
            right_by_flip.push(right as i64);
        }
        // Here every typo pair's Dice sits near the 0.85 cut, where the
        // flips' noise decides the side: the hardening may cost some links,
        // not most (on the linkage benchmark the two give the same F1 to
        // within 0.0004).
        let (hardened, plain) = (right_by_flip[0], right_by_flip[1]);
        assert!(hardened * 100 >= plain * 85, "{hardened} against {plain}");
    }

    /// A drop's blocking keys become entries row by row in file order,
    /// each row's record as `record` says, a repeated key once, rows of no
    /// record skipped; a row whose keys are not whole is named.
    #[test]
    fn blocking_entries_of_a_drop_name_each_key_once_for_its_record() {
        let keys = |rows: &[&[u64]]| {
            BinaryArray::from_iter_values(
                rows.iter()
                    .map(|ks| ks.iter().flat_map(|k| k.to_be_bytes()).collect::<Vec<u8>>()),
            )
        };
        let (low, high) = (5u64, 1 << 63 | 9);
        // Two batches: rows 0-1, then rows 2-3.
        let drop = DropColumns {
            path: "d.parquet".into(),
            starts: vec![0, 2],
            fixed: Vec::new(),
            keys: vec![keys(&[&[low, high, low], &[7]]), keys(&[&[], &[low, 3, 3]])],
            rows: 4,
        };
        // Row 1 belongs to no record of the run.
        let record = [40, u32::MAX, 41, 42];
        let mut part0 = Vec::new();
        drop.part_entries(&record, 0, &mut part0).unwrap();
        assert_eq!(
            part0,
            [entry(low, 40), entry(low, 42), entry(3, 42)],
            "part 0"
        );
        let mut part1 = Vec::new();
        drop.part_entries(&record, 1, &mut part1).unwrap();
        assert_eq!(part1, [entry(high, 40)]);
        let bad = DropColumns {
            keys: vec![keys(&[&[1]]), BinaryArray::from_iter_values([vec![0u8; 7]])],
            starts: vec![0, 1],
            rows: 2,
            ..drop
        };
        let err = bad.part_entries(&[0, 1], 0, &mut Vec::new()).unwrap_err();
        assert!(
            err.to_string()
                .contains("row 2: block_keys is not a whole number of 8-byte keys"),
            "{err}"
        );
    }

    #[test]
    fn range_against_range_finds_what_one_pass_finds() {
        let (enc, _, kp, kn) = people(2000, 300, 5, NAME_FLIP);
        let one = fuzzy_links(&kp, &kn, &enc, &Params::default());
        assert!(one.accepted.len() >= 200);
        // Budgets of 1, 7 and 300 records' filters (two ranges at a time).
        for records in [2, 14, 600] {
            let params = Params {
                filter_budget: records * FILTER_BYTES,
                ..Params::default()
            };
            let ranged = fuzzy_links_from(kp.clone(), kn.clone(), &enc, &params).unwrap();
            assert!(ranged.ranges > 1, "{} ranges", ranged.ranges);
            assert_eq!(ranged.accepted, one.accepted);
            assert_eq!(ranged.refused, one.refused);
            assert_eq!(
                serde_json::to_value(&ranged.report).unwrap(),
                serde_json::to_value(&one.report).unwrap()
            );
        }
        assert_eq!(one.ranges, 1);
    }

    #[test]
    fn ranges_cover_the_records_at_boundaries_with_their_share_to_read() {
        let needed: Vec<bool> = (0..100).map(|i| i % 3 != 0).collect();
        let count = |r: &Range<u32>| (r.start..r.end).filter(|&i| needed[i as usize]).count();
        // Anywhere a boundary: ranges of exactly 10, the last of 6.
        let rs = ranges(&needed, 0, 10, |i| i);
        assert_eq!(
            rs.iter().map(count).collect::<Vec<_>>(),
            [10, 10, 10, 10, 10, 10, 6]
        );
        // Drops of 7 records: each range ends at a drop's end, holding at
        // least 10 and less than 10 plus a drop.
        for from in [0, 5, 40] {
            let rs = ranges(&needed, from, 10, |i| i.div_ceil(7) * 7);
            assert_eq!(rs.first().unwrap().start as usize, from);
            assert_eq!(rs.last().unwrap().end, 100);
            for w in rs.windows(2) {
                assert_eq!(w[0].end, w[1].start);
                assert_eq!(w[0].end % 7, 0);
                assert!((10..17).contains(&count(&w[0])), "{rs:?}");
            }
            assert_eq!(
                rs.iter().map(count).sum::<usize>(),
                (from..100).filter(|&i| needed[i]).count()
            );
        }
        let none = ranges(&needed, 100, 10, |i| i);
        assert_eq!(none.len(), 1);
        assert_eq!((none[0].start, none[0].end), (100, 100));
    }

    #[test]
    fn the_chaining_guard_refuses_a_long_chain_of_fuzzy_links() {
        // Seven records that fuzzy links alone would join into one person:
        // the same name and birth date with typos, no exact key.
        let e = Encoder::new(&TaskForceKey::from_bytes([4; 32])).with_name_flip(0.0);
        let names = [
            "Nurhayati",
            "Nurhayti",
            "Nurhayatii",
            "Nurhajati",
            "Nurhayatti",
            "Nurhyati",
            "Nurhayat",
        ];
        // Among distinct people, so that u can be counted.
        let (mut enc, _, mut kp, mut kn) = people(1000, 100, 3, NAME_FLIP);
        let first = enc.len() as u32;
        for (i, name) in names.iter().enumerate() {
            let t = name_tokens(name, "Siti");
            let x = e.encode(
                t.iter().map(String::as_str),
                parse_birth_date("1990-03-05").ok(),
                "",
                &[i as u8; 32],
            );
            enc.push(
                x.name.as_ref().map(|f| f.as_slice()),
                x.dob.as_ref().map(|f| f.as_slice()),
                None,
                x.name_key,
                x.blocks().iter().copied(),
                1,
                1,
            );
            kp.push(0);
            kn.push(0);
        }
        let params = Params {
            max_parts: 3,
            min_posterior: 0.5,
            ..Params::default()
        };
        let links = fuzzy_links(&kp, &kn, &enc, &params);
        let uf = Forest::new(enc.len());
        for e in &links.accepted {
            uf.union(e.a, e.b);
        }
        let mut sizes: FxHashMap<u32, u32> = FxHashMap::default();
        for i in first..enc.len() as u32 {
            *sizes.entry(uf.find(i)).or_default() += 1;
        }
        assert!(sizes.values().all(|&s| s <= 3), "{sizes:?}");
        assert!(sizes.len() >= 3, "{sizes:?}");
        assert!(!links.refused.is_empty());
        assert_eq!(
            links.report.refused_by_chaining_guard,
            links.refused.len() as u64
        );
    }
}
