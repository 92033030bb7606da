//! Similarity encodings and blocking keys (drop format 2): what lets the
//! secretariat link two records of one person that were typed differently
//! ("Nurhayati" and "Nurhayti", 05/03 and 03/05, one passport digit wrong)
//! without ever seeing a name, a date of birth or a passport number.
//!
//! - **Bloom-filter encodings** of the name and the passport number: each
//!   q-gram of the normalised field sets `k` bits whose positions come from
//!   HMAC-SHA256 under a subkey of the task-force key (double hashing).
//!   Two filters are compared by their Dice coefficient. Without the key
//!   nobody can compute the bits of a guessed value.
//! - **Date-of-birth keys**: keyed hashes of the date and of its one-error
//!   variants (day and month unordered, each year digit left out, year
//!   digits sorted, the year alone), compared by equality
//!   ([`dob_agreement`]). A **name key**: the keyed hash of all the name
//!   tokens, so that the secretariat can tell how common a name is.
//! - **Hardening** of the name filter against frequency attacks: every bit
//!   is flipped with probability [`NAME_FLIP`], with randomness drawn from
//!   the record's own keyed record key (BLIP, "Bloom and flip"), so two
//!   records of the same name do not carry the same filter. See
//!   docs/pseudonymisation.md, section 6.
//! - **Blocking keys**: 64-bit keyed hashes of field combinations
//!   (full date of birth; a name token with the birth year; a name token
//!   with the unordered day and month; all name tokens), so that a pair
//!   with one error in its name or date of birth still shares a block.
//!   Passport numbers are not blocked on beyond the exact `passport` key:
//!   parts of a passport number are shared by many people (a country's
//!   series) and would bring mostly unrelated pairs.
//!
//! Specified in docs/pseudonymisation.md section 6. Nothing here returns
//! or prints a value: only bits and keyed hashes leave.

use chrono::Datelike;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::matchkeys::{Digest, HmacKey};
use super::normalise::BirthDate;
use crate::key::TaskForceKey;

/// Bits of the name filter.
pub const NAME_BITS: usize = 1024;
/// Bits of the date-of-birth keys: [`DOB_KEYS`] keyed 64-bit hashes.
pub const DOB_BITS: usize = DOB_KEYS * 64;
/// How many keyed hashes make the date-of-birth encoding: the full date,
/// the date with day and month unordered, the date with each digit of the
/// year left out (four), the date with the year's digits sorted, and the
/// year alone.
pub const DOB_KEYS: usize = 8;
/// Where the year alone sits among the date-of-birth keys.
pub const DOB_YEAR: usize = 7;
/// Bits of the passport filter.
pub const PASSPORT_BITS: usize = 256;
/// Bits set per q-gram in the name filter.
pub const NAME_K: u32 = 20;
/// Bits set per bigram in the passport filter.
pub const PASSPORT_K: u32 = 12;
/// Probability that a bit of a name filter is flipped (the hardening).
pub const NAME_FLIP: f64 = 0.02;
/// Most blocking keys a record carries.
pub const MAX_BLOCKS: usize = 12;
/// Name tokens used for blocking (the first ones in sorted order).
const BLOCK_TOKENS: usize = 4;

/// The encoding rules, with versions, as stamped on a drop
/// (`safetally.encoding_rules`).
pub const ENCODING_RULES: &str = "bloom_name/1,dob_keys/1,bloom_passport/1,name_key/1,block/1";

/// The encodings of one record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoding {
    /// Name filter: bigrams of the padded name tokens, hardened.
    pub name: Option<[u8; NAME_BITS / 8]>,
    /// Date-of-birth keys ([`DOB_KEYS`] big-endian 64-bit keyed hashes;
    /// for a year alone only the last, the others zero).
    pub dob: Option<[u8; DOB_BITS / 8]>,
    /// Passport filter: bigrams of the padded normalised passport number.
    pub passport: Option<[u8; PASSPORT_BITS / 8]>,
    /// Keyed hash of all the name tokens (order-free): equal for two
    /// records of exactly the same name, so that the secretariat can tell
    /// how common a name is, never which name it is.
    pub name_key: Option<u64>,
    /// Blocking keys, the first `n_blocks` used, sorted and distinct.
    pub blocks: [u64; MAX_BLOCKS],
    /// How many blocking keys.
    pub n_blocks: u8,
}

impl Default for Encoding {
    fn default() -> Self {
        Encoding {
            name: None,
            dob: None,
            passport: None,
            name_key: None,
            blocks: [0; MAX_BLOCKS],
            n_blocks: 0,
        }
    }
}

impl Encoding {
    /// The blocking keys.
    pub fn blocks(&self) -> &[u64] {
        &self.blocks[..self.n_blocks as usize]
    }
}

/// Computes encodings under one task-force key.
#[derive(Clone)]
pub struct Encoder {
    name: std::sync::Arc<Grams>,
    dob: HmacKey,
    passport: std::sync::Arc<Grams>,
    name_key: HmacKey,
    block: HmacKey,
    flip: HmacKey,
    /// Probability of flipping a name-filter bit.
    name_flip: f64,
}

fn subkey(key: &TaskForceKey, rule: &str) -> HmacKey {
    let mut prefix = Vec::new();
    for f in [b"safetally".as_slice(), rule.as_bytes(), b"1"] {
        prefix.extend_from_slice(&(f.len() as u32).to_be_bytes());
        prefix.extend_from_slice(f);
    }
    HmacKey::new(key.bytes(), &prefix)
}

/// The keyed hash of one q-gram: the two 64-bit numbers whose multiples
/// give its bit positions.
fn gram_hash(key: &HmacKey, gram: &[u8]) -> (u64, u64) {
    let mut mac = key.start();
    mac.update(&(gram.len() as u32).to_be_bytes());
    mac.update(gram);
    let d = mac.finish();
    let h1 = u64::from_be_bytes(d[..8].try_into().expect("8 bytes"));
    let h2 = u64::from_be_bytes(d[8..16].try_into().expect("8 bytes")) | 1;
    (h1, h2)
}

/// Sets `k` bits of `filter` for one q-gram: positions `h1 + i * h2`
/// (mod the filter's size) from the q-gram's keyed hash.
fn set_bits(filter: &mut [u8], (h1, h2): (u64, u64), k: u32) {
    let bits = (filter.len() * 8) as u64;
    for i in 0..k as u64 {
        let pos = h1.wrapping_add(i.wrapping_mul(h2)) % bits;
        filter[(pos / 8) as usize] |= 1 << (pos % 8);
    }
}

/// The symbols of [`Grams`]' table: the padding and ASCII letters and
/// digits, which are most of the bigrams of normalised names and passport
/// numbers.
const GRAM_SYMBOLS: usize = 63;

fn gram_symbol(b: u8) -> Option<usize> {
    match b {
        b'_' => Some(0),
        b'a'..=b'z' => Some(1 + (b - b'a') as usize),
        b'A'..=b'Z' => Some(27 + (b - b'A') as usize),
        b'0'..=b'9' => Some(53 + (b - b'0') as usize),
        _ => None,
    }
}

/// The keyed hashes of every bigram of two ASCII symbols, computed once
/// per key, so that encoding a record hashes only its other bigrams. The
/// bits are the same as hashing each bigram when it is met.
struct Grams {
    key: HmacKey,
    table: Vec<(u64, u64)>,
}

impl Grams {
    fn new(key: HmacKey) -> Grams {
        let symbols: Vec<u8> = (0..=255u8).filter(|&b| gram_symbol(b).is_some()).collect();
        let mut table = vec![(0, 0); GRAM_SYMBOLS * GRAM_SYMBOLS];
        for &a in &symbols {
            for &b in &symbols {
                let at = gram_symbol(a).expect("a symbol") * GRAM_SYMBOLS
                    + gram_symbol(b).expect("a symbol");
                table[at] = gram_hash(&key, &[a, b]);
            }
        }
        Grams { key, table }
    }

    fn hash(&self, gram: &[u8]) -> (u64, u64) {
        if let [a, b] = gram
            && let (Some(a), Some(b)) = (gram_symbol(*a), gram_symbol(*b))
        {
            return self.table[a * GRAM_SYMBOLS + b];
        }
        gram_hash(&self.key, gram)
    }
}

/// Flips every bit of `filter` with probability `p`, independently, from
/// `rng`: the gaps between flipped bits are drawn (geometric), not each
/// bit, which gives the same distribution for a few draws a filter.
fn flip_bits(filter: &mut [u8], p: f64, rng: &mut ChaCha8Rng) {
    let bits = filter.len() * 8;
    let log_keep = (1.0 - p).ln();
    let mut pos = 0usize;
    loop {
        let u: f64 = rng.random();
        // Bits kept before the next flip: floor(ln(1 - u) / ln(1 - p)).
        let gap = ((1.0 - u).ln() / log_keep).floor();
        if !gap.is_finite() || gap >= (bits - pos) as f64 {
            return;
        }
        pos += gap as usize;
        filter[pos / 8] ^= 1 << (pos % 8);
        pos += 1;
        if pos >= bits {
            return;
        }
    }
}

/// The padded bigrams of a word: `_a`, `ab`, ..., `z_`.
fn bigrams(word: &str, mut each: impl FnMut(&[u8])) {
    let mut prev = '_';
    let mut buf = [0u8; 8];
    for c in word.chars().chain(std::iter::once('_')) {
        let a = prev.encode_utf8(&mut buf[..4]).len();
        let b = c.encode_utf8(&mut buf[a..]).len();
        each(&buf[..a + b]);
        prev = c;
    }
}

impl Encoder {
    /// An encoder for this key, with the standard hardening.
    pub fn new(key: &TaskForceKey) -> Self {
        Encoder {
            name: std::sync::Arc::new(Grams::new(subkey(key, "bloom_name"))),
            dob: subkey(key, "dob_keys"),
            passport: std::sync::Arc::new(Grams::new(subkey(key, "bloom_passport"))),
            name_key: subkey(key, "name_key"),
            block: subkey(key, "block"),
            flip: subkey(key, "bloom_name_flip"),
            name_flip: NAME_FLIP,
        }
    }

    /// This encoder with another flip probability for the name filter (0:
    /// no hardening), for measuring what the hardening costs.
    pub fn with_name_flip(mut self, p: f64) -> Self {
        self.name_flip = p;
        self
    }

    /// The encodings of one record: its sorted name tokens, date of birth,
    /// normalised passport number (empty: none) and record key (the seed of
    /// the name filter's bit flips).
    pub fn encode<'a>(
        &self,
        tokens: impl ExactSizeIterator<Item = &'a str> + Clone,
        birth: Option<BirthDate>,
        passport: &str,
        record_key: &Digest,
    ) -> Encoding {
        let mut out = Encoding::default();
        if tokens.len() > 0 {
            let mut f = [0u8; NAME_BITS / 8];
            for t in tokens.clone() {
                bigrams(t, |g| set_bits(&mut f, self.name.hash(g), NAME_K));
            }
            if self.name_flip > 0.0 {
                let mut mac = self.flip.start();
                mac.update(record_key);
                let mut rng = ChaCha8Rng::from_seed(mac.finish());
                flip_bits(&mut f, self.name_flip, &mut rng);
            }
            out.name = Some(f);
        }
        let keyed = |key: &HmacKey, fields: &[&[u8]]| -> u64 {
            let mut mac = key.start();
            for f in fields {
                mac.update(&(f.len() as u32).to_be_bytes());
                mac.update(f);
            }
            u64::from_be_bytes(mac.finish()[..8].try_into().expect("8 bytes")).max(1)
        };
        if let Some(b) = birth {
            let mut keys = [0u64; DOB_KEYS];
            let year = format!("{:04}", b.year());
            if let BirthDate::Full(d) = b {
                let (m, day) = (d.month() as u8, d.day() as u8);
                let y = year.as_bytes();
                keys[0] = keyed(&self.dob, &[b"date", y, &[m, day]]);
                keys[1] = keyed(&self.dob, &[b"unordered", y, &[m.min(day), m.max(day)]]);
                for i in 0..4 {
                    let mut masked = [0u8; 4];
                    masked.copy_from_slice(y);
                    masked[i] = b'*';
                    keys[2 + i] = keyed(&self.dob, &[b"year_digit", &masked, &[m, day]]);
                }
                let mut sorted = [0u8; 4];
                sorted.copy_from_slice(y);
                sorted.sort_unstable();
                keys[6] = keyed(&self.dob, &[b"year_digits_sorted", &sorted, &[m, day]]);
            }
            keys[DOB_YEAR] = keyed(&self.dob, &[b"year", year.as_bytes()]);
            let mut f = [0u8; DOB_BITS / 8];
            for (out, k) in f.chunks_exact_mut(8).zip(keys) {
                out.copy_from_slice(&k.to_be_bytes());
            }
            out.dob = Some(f);
        }
        if !passport.is_empty() {
            let mut f = [0u8; PASSPORT_BITS / 8];
            bigrams(passport, |g| {
                set_bits(&mut f, self.passport.hash(g), PASSPORT_K)
            });
            out.passport = Some(f);
        }
        let mut blocks: Vec<u64> = Vec::with_capacity(MAX_BLOCKS);
        let block = |fields: &[&[u8]]| -> u64 {
            let mut mac = self.block.start();
            for f in fields {
                mac.update(&(f.len() as u32).to_be_bytes());
                mac.update(f);
            }
            u64::from_be_bytes(mac.finish()[..8].try_into().expect("8 bytes")).max(1)
        };
        let full = match birth {
            Some(BirthDate::Full(d)) => Some(d),
            _ => None,
        };
        if let Some(d) = full {
            let (y, m, day) = (d.year() as u16, d.month() as u8, d.day() as u8);
            blocks.push(block(&[b"dob", &y.to_be_bytes(), &[m, day]]));
        }
        for t in tokens.clone().take(BLOCK_TOKENS) {
            if let Some(b) = birth {
                blocks.push(block(&[
                    b"token_year",
                    t.as_bytes(),
                    &(b.year() as u16).to_be_bytes(),
                ]));
            }
            if let Some(d) = full {
                let (m, day) = (d.month() as u8, d.day() as u8);
                blocks.push(block(&[
                    b"token_day_month",
                    t.as_bytes(),
                    &[m.min(day), m.max(day)],
                ]));
            }
        }
        if tokens.len() > 0 {
            let mut fields: Vec<&[u8]> = vec![b"names"];
            fields.extend(tokens.clone().map(str::as_bytes));
            blocks.push(block(&fields));
            let fields: Vec<&[u8]> = tokens.map(str::as_bytes).collect();
            out.name_key = Some(keyed(&self.name_key, &fields));
        }
        blocks.sort_unstable();
        blocks.dedup();
        blocks.truncate(MAX_BLOCKS);
        out.n_blocks = blocks.len() as u8;
        out.blocks[..blocks.len()].copy_from_slice(&blocks);
        out
    }
}

/// The Dice coefficient of two filters of one size: twice the bits set in
/// both over the bits set in each.
pub fn dice(a: &[u8], b: &[u8]) -> f64 {
    let (both, ones_a, ones_b) = bit_counts(a, b);
    let total = ones_a + ones_b;
    if total == 0 {
        0.0
    } else {
        2.0 * both as f64 / total as f64
    }
}

/// The bits set in both filters, in `x` and in `y`. Counted with the
/// processor's population count instruction where it has one: the build
/// targets every x86-64 processor, whose baseline lacks it, and counting
/// bits by arithmetic made comparing filters several times slower.
fn bit_counts(x: &[u8], y: &[u8]) -> (u32, u32, u32) {
    #[cfg(target_arch = "x86_64")]
    if std::arch::is_x86_feature_detected!("popcnt") {
        // SAFETY: the processor has the instruction (checked just above).
        return unsafe { bit_counts_popcnt(x, y) };
    }
    bit_counts_any(x, y)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "popcnt")]
fn bit_counts_popcnt(x: &[u8], y: &[u8]) -> (u32, u32, u32) {
    bit_counts_any(x, y)
}

#[inline(always)]
fn bit_counts_any(x: &[u8], y: &[u8]) -> (u32, u32, u32) {
    let (mut both, mut ones_x, mut ones_y) = (0u32, 0u32, 0u32);
    for (x, y) in x.chunks_exact(8).zip(y.chunks_exact(8)) {
        let x = u64::from_le_bytes(x.try_into().expect("8 bytes"));
        let y = u64::from_le_bytes(y.try_into().expect("8 bytes"));
        both += (x & y).count_ones();
        ones_x += x.count_ones();
        ones_y += y.count_ones();
    }
    (both, ones_x, ones_y)
}

/// The Dice coefficient two filters had before each had its bits flipped
/// independently with probability `p` (the hardening), estimated from the
/// flipped ones. Per bit, a filter's count of set bits becomes
/// `a (1 - 2p) + L p` in expectation, and the count set in both becomes
/// `c (1 - 2p)^2 + (a + b) p (1 - 2p) + L p^2` (L bits): solved for `a`,
/// `b` and `c`. With `p = 0` it is [`dice`]. Flips are noise the
/// secretariat knows the rate of, so it can take their expected effect
/// back out; which bits flipped stays unknown.
pub fn dice_unflipped(x: &[u8], y: &[u8], p: f64) -> f64 {
    if p <= 0.0 {
        return dice(x, y);
    }
    let (both, ones_x, ones_y) = bit_counts(x, y);
    let l = (x.len() * 8) as f64;
    let q = 1.0 - 2.0 * p;
    let a = ((ones_x as f64 - l * p) / q).max(0.0);
    let b = ((ones_y as f64 - l * p) / q).max(0.0);
    let c = ((both as f64 - (a + b) * p * q - l * p * p) / (q * q)).max(0.0);
    if a + b <= 0.0 {
        0.0
    } else {
        (2.0 * c / (a + b)).min(1.0)
    }
}

/// How two date-of-birth encodings agree, from the keyed hashes they
/// share (never from the dates, which the secretariat does not have).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DobAgreement {
    /// The same full date.
    Same,
    /// Full dates one typing error apart: day and month swapped, one digit
    /// of the year wrong, or two digits of the year transposed.
    OneError,
    /// The same year, one of the two dates being a year alone.
    SameYear,
    /// Anything else.
    Other,
}

fn dob_key(f: &[u8], i: usize) -> u64 {
    u64::from_be_bytes(f[i * 8..i * 8 + 8].try_into().expect("8 bytes"))
}

/// How the date-of-birth encodings `a` and `b` agree.
pub fn dob_agreement(a: &[u8], b: &[u8]) -> DobAgreement {
    let full = |f: &[u8]| dob_key(f, 0) != 0;
    if full(a) && full(b) {
        if dob_key(a, 0) == dob_key(b, 0) {
            return DobAgreement::Same;
        }
        if (1..DOB_YEAR).any(|i| dob_key(a, i) == dob_key(b, i)) {
            return DobAgreement::OneError;
        }
        return DobAgreement::Other;
    }
    if dob_key(a, DOB_YEAR) == dob_key(b, DOB_YEAR) {
        DobAgreement::SameYear
    } else {
        DobAgreement::Other
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pseudonymise::normalise::{name_tokens, parse_birth_date};

    fn enc(e: &Encoder, family: &str, given: &str, dob: &str, passport: &str) -> Encoding {
        let tokens = name_tokens(family, given);
        let birth = parse_birth_date(dob).ok();
        e.encode(tokens.iter().map(String::as_str), birth, passport, &[7; 32])
    }

    fn swapped_key(e: &Encoder) -> Option<u64> {
        enc(e, "Siti", "Nurhayati", "", "").name_key
    }

    #[test]
    fn encodings_are_deterministic_under_a_key_and_differ_between_keys() {
        let a = Encoder::new(&TaskForceKey::from_bytes([1; 32]));
        let b = Encoder::new(&TaskForceKey::from_bytes([2; 32]));
        let x = enc(&a, "Rahayu", "Siti", "1990-03-05", "X1234567");
        assert_eq!(x, enc(&a, "Rahayu", "Siti", "1990-03-05", "X1234567"));
        let y = enc(&b, "Rahayu", "Siti", "1990-03-05", "X1234567");
        assert!(dice(x.name.as_ref().unwrap(), y.name.as_ref().unwrap()) < 0.5);
        assert!(x.blocks().iter().all(|k| !y.blocks().contains(k)));
    }

    #[test]
    fn typos_swaps_and_year_typos_stay_similar_other_values_do_not() {
        let e = Encoder::new(&TaskForceKey::from_bytes([1; 32])).with_name_flip(0.0);
        let base = enc(&e, "Nurhayati", "Siti", "1990-03-05", "X1234567");
        let name = |x: &Encoding| dice(base.name.as_ref().unwrap(), x.name.as_ref().unwrap());
        let dob = |x: &Encoding| dob_agreement(base.dob.as_ref().unwrap(), x.dob.as_ref().unwrap());
        let pp = |x: &Encoding| {
            dice(
                base.passport.as_ref().unwrap(),
                x.passport.as_ref().unwrap(),
            )
        };
        let typo = enc(&e, "Nurhayti", "Sitti", "1990-05-03", "X1234561");
        assert!(name(&typo) > 0.75, "{}", name(&typo));
        assert_eq!(dob(&typo), DobAgreement::OneError);
        assert!(pp(&typo) > 0.7, "{}", pp(&typo));
        // Order of names does not matter.
        let swapped = enc(&e, "Siti", "Nurhayati", "1990-03-05", "X1234567");
        assert_eq!(name(&swapped), 1.0);
        let year = enc(&e, "Nurhayati", "Siti", "1996-03-05", "X1234567");
        assert_eq!(dob(&year), DobAgreement::OneError);
        let transposed = enc(&e, "Nurhayati", "Siti", "1909-03-05", "X1234567");
        assert_eq!(dob(&transposed), DobAgreement::OneError);
        assert_eq!(dob(&base), DobAgreement::Same);
        // The same year and month, another day: not one typing error.
        let month = enc(&e, "Nurhayati", "Siti", "1990-03-17", "X1234567");
        assert_eq!(dob(&month), DobAgreement::Other);
        let year_only = enc(&e, "Nurhayati", "Siti", "1990", "X1234567");
        assert_eq!(dob(&year_only), DobAgreement::SameYear);
        let other_year = enc(&e, "Nurhayati", "Siti", "1991", "X1234567");
        assert_eq!(dob(&other_year), DobAgreement::Other);
        assert_eq!(base.name_key, swapped_key(&e));
        let other = enc(&e, "Santoso", "Budi", "1985-11-21", "B7654321");
        assert!(name(&other) < 0.3, "{}", name(&other));
        assert_eq!(dob(&other), DobAgreement::Other);
        assert_ne!(other.name_key, base.name_key);
        assert!(pp(&other) < 0.5, "{}", pp(&other));
        // One error leaves a shared block.
        let name_only = enc(&e, "Nurhayti", "Sitti", "1990-03-05", "");
        let swap_only = enc(&e, "Nurhayati", "Siti", "1990-05-03", "");
        for x in [&name_only, &swap_only, &year] {
            assert!(x.blocks().iter().any(|k| base.blocks().contains(k)));
        }
        assert!(!other.blocks().iter().any(|k| base.blocks().contains(k)));
    }

    #[test]
    fn hardening_flips_bits_per_record_but_keeps_the_same_name_similar() {
        let e = Encoder::new(&TaskForceKey::from_bytes([1; 32]));
        let tokens = name_tokens("Rahayu", "Siti");
        let one = e.encode(tokens.iter().map(String::as_str), None, "", &[1; 32]);
        let two = e.encode(tokens.iter().map(String::as_str), None, "", &[2; 32]);
        assert_ne!(one.name, two.name, "the same name gives different filters");
        let d = dice(one.name.as_ref().unwrap(), two.name.as_ref().unwrap());
        assert!(d > 0.8, "{d}");
    }

    #[test]
    fn missing_fields_give_no_encoding() {
        let e = Encoder::new(&TaskForceKey::from_bytes([1; 32]));
        let x = enc(&e, "", "", "1990", "");
        assert_eq!((x.name, x.passport, x.name_key), (None, None, None));
        let year_only = x.dob.expect("a year alone is kept");
        assert!(year_only[..DOB_YEAR * 8].iter().all(|&b| b == 0));
        let y = enc(&e, "", "", "", "");
        assert_eq!((y.dob, y.n_blocks), (None, 0));
    }

    #[test]
    fn the_bigram_table_gives_the_hash_of_each_bigram() {
        let key = subkey(&TaskForceKey::from_bytes([3; 32]), "bloom_name");
        let grams = Grams::new(key.clone());
        for g in [
            b"_a".as_slice(),
            b"zz",
            b"Q7",
            b"9_",
            "\u{e9}a".as_bytes(),
            "\u{4e2d}\u{6587}".as_bytes(),
            b"a-",
        ] {
            assert_eq!(grams.hash(g), gram_hash(&key, g), "{g:?}");
        }
        assert_ne!(grams.hash(b"ab"), grams.hash(b"ba"));
    }

    #[test]
    fn flipping_flips_each_bit_with_its_probability() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        let (filters, p) = (4000, 0.02);
        let mut per_bit = vec![0u32; NAME_BITS];
        let mut per_filter = Vec::new();
        for _ in 0..filters {
            let mut f = [0u8; NAME_BITS / 8];
            flip_bits(&mut f, p, &mut rng);
            let mut n = 0;
            for (i, c) in per_bit.iter_mut().enumerate() {
                if f[i / 8] >> (i % 8) & 1 == 1 {
                    *c += 1;
                    n += 1;
                }
            }
            per_filter.push(n as f64);
        }
        let total: u32 = per_bit.iter().sum();
        let expected = (filters * NAME_BITS) as f64 * p;
        // The count is binomial: within five standard deviations.
        let sd = (expected * (1.0 - p)).sqrt();
        assert!((total as f64 - expected).abs() < 5.0 * sd, "{total} flips");
        // No region of the filter is favoured: the first and the last bit
        // and the two halves see the same rate.
        let half = |r: std::ops::Range<usize>| per_bit[r].iter().sum::<u32>() as f64;
        let (a, b) = (half(0..NAME_BITS / 2), half(NAME_BITS / 2..NAME_BITS));
        assert!(
            (a - b).abs() < 5.0 * (2.0 * expected / 2.0).sqrt(),
            "{a} against {b}"
        );
        for i in [0, NAME_BITS - 1] {
            let c = per_bit[i] as f64;
            assert!((c - filters as f64 * p).abs() < 6.0 * (filters as f64 * p).sqrt());
        }
        // Flips per filter vary as a binomial does (variance n p (1 - p)).
        let mean = per_filter.iter().sum::<f64>() / filters as f64;
        let var = per_filter.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / filters as f64;
        let binomial = NAME_BITS as f64 * p * (1.0 - p);
        assert!(
            (var / binomial - 1.0).abs() < 0.15,
            "variance {var} against {binomial}"
        );
        // Certain flipping flips every bit; none flips none.
        let mut f = [0u8; NAME_BITS / 8];
        flip_bits(&mut f, 1.0, &mut rng);
        assert!(f.iter().all(|&b| b == 0xff));
    }

    #[test]
    fn the_dice_before_flipping_is_estimated_from_flipped_filters() {
        let plain = Encoder::new(&TaskForceKey::from_bytes([6; 32])).with_name_flip(0.0);
        let hardened = Encoder::new(&TaskForceKey::from_bytes([6; 32]));
        let name = |e: &Encoder, family: &str, given: &str, seed: u8| {
            let tokens = name_tokens(family, given);
            e.encode(tokens.iter().map(String::as_str), None, "", &[seed; 32])
                .name
                .expect("a name filter")
        };
        for (f1, f2) in [
            ("Nurhayati", "Nurhayati"),
            ("Nurhayati", "Nurhayti"),
            ("Rahayu", "Wibowo"),
        ] {
            let truth = dice(&name(&plain, f1, "Siti", 0), &name(&plain, f2, "Siti", 0));
            let (mut raw, mut est) = (0.0, 0.0);
            let runs = 200;
            for seed in 0..runs {
                let (x, y) = (
                    name(&hardened, f1, "Siti", seed),
                    name(&hardened, f2, "Siti", seed.wrapping_add(101)),
                );
                raw += dice(&x, &y) / runs as f64;
                est += dice_unflipped(&x, &y, NAME_FLIP) / runs as f64;
            }
            // Flipping lowers the Dice of alike names; the estimate takes
            // that back, on average, to within 0.02.
            assert!(
                (est - truth).abs() < 0.02,
                "{f1}/{f2}: {est} against {truth}"
            );
            if truth > 0.8 {
                assert!(truth - raw > 0.04, "{f1}/{f2}: raw {raw} against {truth}");
            }
        }
        let x = name(&plain, "Rahayu", "Siti", 1);
        assert_eq!(dice_unflipped(&x, &x, 0.0), dice(&x, &x));
    }

    /// The bits counted with the processor's instruction are the bits
    /// counted by arithmetic, on filters of every density.
    #[test]
    fn bits_are_counted_alike_with_and_without_the_popcount_instruction() {
        let mut x = [0u8; 128];
        let mut y = [0u8; 128];
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        for round in 0..64 {
            for (a, b) in x.iter_mut().zip(y.iter_mut()) {
                state = state
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                let r = (state >> 32) as u8;
                *a = if round % 4 == 0 {
                    0xff
                } else {
                    r & (state >> 48) as u8
                };
                *b = r.rotate_left(round % 8);
            }
            let (both, ones_x, ones_y) = bit_counts_any(&x, &y);
            assert_eq!(bit_counts(&x, &y), (both, ones_x, ones_y));
            let naive = |f: &[u8]| f.iter().map(|v| v.count_ones()).sum::<u32>();
            let and: Vec<u8> = x.iter().zip(&y).map(|(a, b)| a & b).collect();
            assert_eq!((naive(&and), naive(&x), naive(&y)), (both, ones_x, ones_y));
        }
    }
}
