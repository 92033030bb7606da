//! Match keys and record keys: HMAC-SHA256 under the task-force key, over an
//! unambiguous encoding of the rule's name, version and fields.
//!
//! `enc(x) = u32 big-endian length of x || x`; a key is
//! `HMAC-SHA256(key, enc("safetally") || enc(rule) || enc(version) || enc(field)...)`.
//! A rule whose fields are missing yields no key. Keys are never printed.
//!
//! The keys are computed with SHA-256's compression function from states
//! prepared once per key (HMAC's inner pad with the rule's name and version
//! fed, and the outer pad), which is HMAC-SHA256 as RFC 2104 defines it; a
//! test checks it against RFC 4231's vectors and the `hmac` crate.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use sha2::digest::generic_array::GenericArray;

use crate::key::TaskForceKey;

/// A 32-byte keyed hash.
pub type Digest = [u8; 32];

/// Feeds length-prefixed fields into a MAC.
pub fn encode_fields(mac: &mut Hmac<Sha256>, fields: &[&[u8]]) {
    for f in fields {
        mac.update(&(f.len() as u32).to_be_bytes());
        mac.update(f);
    }
}

/// SHA-256's initial state (FIPS 180-4, 5.3.3).
const SHA256_INIT: [u32; 8] = [
    0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19,
];

/// Message bytes held before full blocks are compressed: keys' messages
/// (about 30 bytes of rule, then the fields) nearly always fit, so a key
/// is one copy of each field and one call per block.
const HELD: usize = 256;

/// A SHA-256 computation under way: the state after the blocks
/// compressed, and the bytes after them written in a row (the rest zero).
#[derive(Clone)]
struct Sha256Message {
    state: [u32; 8],
    /// Bytes compressed so far.
    done: u64,
    held: [u8; HELD],
    len: usize,
}

impl Sha256Message {
    fn new() -> Self {
        Sha256Message {
            state: SHA256_INIT,
            done: 0,
            held: [0; HELD],
            len: 0,
        }
    }

    /// Appends `data`; room for the padding (9 bytes) is always left.
    #[inline]
    fn update(&mut self, data: &[u8]) {
        if self.len + data.len() <= HELD - 9 {
            self.held[self.len..self.len + data.len()].copy_from_slice(data);
            self.len += data.len();
        } else {
            self.update_long(data);
        }
    }

    /// [`update`](Self::update) when the bytes held would pass
    /// `HELD - 9`: full blocks are compressed as they fill.
    #[cold]
    fn update_long(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            let n = (64 - self.len % 64).min(data.len());
            self.held[self.len..self.len + n].copy_from_slice(&data[..n]);
            self.len += n;
            data = &data[n..];
            if self.len == HELD {
                self.compress_held(HELD / 64);
                self.held = [0; HELD];
                self.len = 0;
            }
        }
        if self.len > HELD - 9 {
            // Keep the last partial block only.
            let full = self.len / 64;
            self.compress_held(full);
            let rest = self.len - full * 64;
            let mut held = [0; HELD];
            held[..rest].copy_from_slice(&self.held[full * 64..self.len]);
            self.held = held;
            self.len = rest;
        }
    }

    fn compress_held(&mut self, blocks: usize) {
        for block in self.held[..blocks * 64].chunks_exact(64) {
            compress(&mut self.state, block);
        }
        self.done += blocks as u64 * 64;
    }

    /// The digest: the message padded with `0x80`, zeros (already there)
    /// and its length in bits.
    #[inline]
    fn finish(&mut self) -> Digest {
        let bits = (self.done + self.len as u64) * 8;
        self.held[self.len] = 0x80;
        let blocks = (self.len + 9).div_ceil(64);
        self.held[blocks * 64 - 8..blocks * 64].copy_from_slice(&bits.to_be_bytes());
        self.compress_held(blocks);
        digest_of(&self.state)
    }
}

#[inline]
fn digest_of(state: &[u32; 8]) -> Digest {
    let mut out = [0; 32];
    for (o, w) in out.chunks_exact_mut(4).zip(state) {
        o.copy_from_slice(&w.to_be_bytes());
    }
    out
}

#[inline]
fn compress(state: &mut [u32; 8], block: &[u8]) {
    sha2::compress256(state, std::slice::from_ref(GenericArray::from_slice(block)));
}

/// HMAC-SHA256 (RFC 2104) under one key, with the key's pads already
/// compressed and the first bytes of every message (under a block) held.
#[derive(Clone)]
pub(crate) struct HmacKey {
    /// The state after the inner pad's block.
    inner: [u32; 8],
    /// The state after the outer pad's block.
    outer: [u32; 8],
    /// The bytes every message starts with.
    prefix: [u8; 64],
    prefix_len: usize,
}

impl HmacKey {
    /// `prefix` must be shorter than a block (64 bytes).
    pub(crate) fn new(key: &[u8], prefix: &[u8]) -> Self {
        assert!(prefix.len() < 64, "a prefix under a block");
        let mut block = [0u8; 64];
        if key.len() > 64 {
            let mut h = Sha256Message::new();
            h.update(key);
            block[..32].copy_from_slice(&h.finish());
        } else {
            block[..key.len()].copy_from_slice(key);
        }
        let pad = |byte: u8| {
            let mut state = SHA256_INIT;
            compress(&mut state, &block.map(|b| b ^ byte));
            state
        };
        let mut held = [0u8; 64];
        held[..prefix.len()].copy_from_slice(prefix);
        HmacKey {
            inner: pad(0x36),
            outer: pad(0x5c),
            prefix: held,
            prefix_len: prefix.len(),
        }
    }

    /// A message under way, its prefix fed.
    #[inline]
    pub(crate) fn start(&self) -> HmacMessage<'_> {
        let mut held = [0u8; HELD];
        held[..64].copy_from_slice(&self.prefix);
        HmacMessage {
            inner: Sha256Message {
                state: self.inner,
                done: 64,
                held,
                len: self.prefix_len,
            },
            outer: &self.outer,
        }
    }
}

/// One HMAC-SHA256 computation under way.
pub(crate) struct HmacMessage<'a> {
    inner: Sha256Message,
    outer: &'a [u32; 8],
}

impl HmacMessage<'_> {
    #[inline]
    pub(crate) fn update(&mut self, data: &[u8]) {
        self.inner.update(data);
    }

    /// The outer hash of the inner digest: one block, its padding fixed
    /// (32 bytes after the 64 of the pad: 768 bits).
    #[inline]
    pub(crate) fn finish(&mut self) -> Digest {
        let mut block = [0u8; 64];
        block[..32].copy_from_slice(&self.inner.finish());
        block[32] = 0x80;
        block[56..].copy_from_slice(&768u64.to_be_bytes());
        let mut state = *self.outer;
        compress(&mut state, &block);
        digest_of(&state)
    }
}

/// Computes rule keys under one task-force key. Holds the keyed HMAC state
/// once so each key costs only the message's hashing.
#[derive(Clone)]
pub struct Keyer {
    /// The keyed state with each rule's name and version as the prefix.
    passport: HmacKey,
    name_dob: HmacKey,
    record: HmacKey,
}

/// Version of the passport rule.
pub const PASSPORT_RULE: (&str, &str) = ("passport", "1");
/// Version of the name and date of birth rule.
pub const NAME_DOB_RULE: (&str, &str) = ("name_dob", "1");
/// Version of the record rule.
pub const RECORD_RULE: (&str, &str) = ("record", "1");

impl Keyer {
    /// A keyer for this key.
    pub fn new(key: &TaskForceKey) -> Self {
        let rule = |(name, version): (&str, &str)| {
            let mut prefix = Vec::new();
            for f in [b"safetally".as_slice(), name.as_bytes(), version.as_bytes()] {
                prefix.extend_from_slice(&(f.len() as u32).to_be_bytes());
                prefix.extend_from_slice(f);
            }
            HmacKey::new(key.bytes(), &prefix)
        };
        Keyer {
            passport: rule(PASSPORT_RULE),
            name_dob: rule(NAME_DOB_RULE),
            record: rule(RECORD_RULE),
        }
    }

    #[inline]
    fn rule<'a>(rule: &HmacKey, fields: impl IntoIterator<Item = &'a [u8]>) -> Digest {
        let mut mac = rule.start();
        for f in fields {
            mac.update(&(f.len() as u32).to_be_bytes());
            mac.update(f);
        }
        mac.finish()
    }

    /// `passport` v1: normalised passport number and nationality (alpha-3).
    /// Passport numbers are unique only within a country, so both are needed.
    pub fn passport(&self, passport: Option<&str>, nationality: Option<&str>) -> Option<Digest> {
        let (p, n) = (passport?, nationality?);
        Some(Self::rule(&self.passport, [p.as_bytes(), n.as_bytes()]))
    }

    /// `name_dob` v1: the full date of birth (`YYYY-MM-DD`), then the sorted
    /// name tokens, each a field of its own.
    pub fn name_dob(&self, tokens: &[String], dob: Option<&str>) -> Option<Digest> {
        self.name_dob_of(tokens.iter().map(String::as_str), dob)
    }

    /// [`name_dob`](Self::name_dob) of tokens given in sorted order.
    pub fn name_dob_of<'a>(
        &self,
        tokens: impl ExactSizeIterator<Item = &'a str>,
        dob: Option<&'a str>,
    ) -> Option<Digest> {
        let dob = dob?;
        if tokens.len() == 0 {
            return None;
        }
        let fields = std::iter::once(dob.as_bytes()).chain(tokens.map(str::as_bytes));
        Some(Self::rule(&self.name_dob, fields))
    }

    /// `record` v1: form, org and the normalised reference. A later drop's
    /// record with the same key corrects the earlier one.
    pub fn record(&self, form: &str, org: &str, reference: &str) -> Digest {
        Self::rule(
            &self.record,
            [form.as_bytes(), org.as_bytes(), reference.as_bytes()],
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 4231 test cases 1, 2, 3, 4, 6 and 7 for HMAC-SHA256 (case 5 is
    /// truncated output): the HMAC we build keys on is the standard one.
    #[test]
    fn hmac_sha256_matches_rfc_4231() {
        let cases: [(Vec<u8>, Vec<u8>, &str); 6] = [
            (
                vec![0x0b; 20],
                b"Hi There".to_vec(),
                "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7",
            ),
            (
                b"Jefe".to_vec(),
                b"what do ya want for nothing?".to_vec(),
                "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843",
            ),
            (
                vec![0xaa; 20],
                vec![0xdd; 50],
                "773ea91e36800e46854db8ebd09181a72959098b3ef8c122d9635514ced565fe",
            ),
            (
                (1..=25).collect(),
                vec![0xcd; 50],
                "82558a389a443c0ea4cc819899f2083a85f0faa3e578f8077a2e3ff46729665b",
            ),
            (
                vec![0xaa; 131],
                b"Test Using Larger Than Block-Size Key - Hash Key First".to_vec(),
                "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54",
            ),
            (
                vec![0xaa; 131],
                b"This is a test using a larger than block-size key and a larger than block-size data. The key needs to be hashed before being used by the HMAC algorithm.".to_vec(),
                "9b09ffa71b942fcb27635fbcd5b0e944bfdc63644f0713938a7f51535c3a35e2",
            ),
        ];
        for (key, data, expected) in cases {
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(&data);
            assert_eq!(hex::encode(mac.finalize().into_bytes()), expected);
            let ours = HmacKey::new(&key, &[]);
            let mut m = ours.start();
            m.update(&data);
            assert_eq!(hex::encode(m.finish()), expected, "ours");
        }
    }

    /// The HMAC built on the compression function gives the `hmac` crate's
    /// digests for keys and messages of every length around the block
    /// size, fed in one piece or in several.
    #[test]
    fn our_hmac_is_the_hmac_crates() {
        let bytes: Vec<u8> = (0..800u32).map(|i| (i * 7 + 3) as u8).collect();
        for key_len in [0, 1, 20, 32, 63, 64, 65, 131] {
            let key = &bytes[..key_len];
            for len in 0..=600 {
                let data = &bytes[100..100 + len];
                let mut theirs = Hmac::<Sha256>::new_from_slice(key).unwrap();
                theirs.update(data);
                let theirs: Digest = theirs.finalize().into_bytes().into();
                let ours = HmacKey::new(key, &[]);
                let mut whole = ours.start();
                whole.update(data);
                assert_eq!(whole.finish(), theirs, "key {key_len}, message {len}");
                let mut pieces = ours.start();
                for piece in data.chunks(len / 3 + 1) {
                    pieces.update(piece);
                }
                assert_eq!(pieces.finish(), theirs, "key {key_len}, message {len}");
                // With some of the message as the prefix.
                let cut = len.min(40);
                let prefixed = HmacKey::new(key, &data[..cut]);
                let mut rest = prefixed.start();
                rest.update(&data[cut..]);
                assert_eq!(rest.finish(), theirs, "key {key_len}, message {len}");
            }
        }
    }

    /// The keys are those of the `hmac` crate over the encoded fields.
    #[test]
    fn keys_are_hmac_over_the_encoded_fields() {
        let key = TaskForceKey::from_bytes([9; 32]);
        let k = Keyer::new(&key);
        let mac = |fields: &[&[u8]]| -> Digest {
            let mut mac = Hmac::<Sha256>::new_from_slice(key.bytes()).unwrap();
            encode_fields(&mut mac, fields);
            mac.finalize().into_bytes().into()
        };
        let long = "x".repeat(150);
        for reference in ["", "A1", "CASE-2018-000123", long.as_str()] {
            assert_eq!(
                k.record("screening", "ORG", reference),
                mac(&[
                    b"safetally",
                    b"record",
                    b"1",
                    b"screening",
                    b"ORG",
                    reference.as_bytes()
                ])
            );
        }
        assert_eq!(
            k.passport(Some("P1234567"), Some("IDN")),
            Some(mac(&[b"safetally", b"passport", b"1", b"P1234567", b"IDN"]))
        );
        assert_eq!(
            k.name_dob(&["ana".into(), "lopez".into()], Some("1990-01-31")),
            Some(mac(&[
                b"safetally",
                b"name_dob",
                b"1",
                b"1990-01-31",
                b"ana",
                b"lopez"
            ]))
        );
    }

    #[test]
    fn fields_are_length_prefixed_not_concatenated() {
        let k = Keyer::new(&TaskForceKey::from_bytes([7; 32]));
        assert_ne!(
            k.record("screening", "AB", "C1"),
            k.record("screening", "A", "BC1")
        );
        let t = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_ne!(
            k.name_dob(&t(&["ab", "c"]), Some("2000-01-01")),
            k.name_dob(&t(&["a", "bc"]), Some("2000-01-01"))
        );
    }

    #[test]
    fn missing_fields_give_no_key() {
        let k = Keyer::new(&TaskForceKey::from_bytes([7; 32]));
        assert_eq!(k.passport(Some("P1"), None), None);
        assert_eq!(k.passport(None, Some("IDN")), None);
        assert_eq!(k.name_dob(&[], Some("2000-01-01")), None);
        assert_eq!(k.name_dob(&["a".into()], None), None);
        assert_ne!(
            k.passport(Some("P1"), Some("IDN")),
            k.passport(Some("P1"), Some("PHL"))
        );
    }
}
