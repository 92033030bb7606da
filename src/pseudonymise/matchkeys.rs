//! Match keys and record keys: HMAC-SHA256 under the task-force key, over an
//! unambiguous encoding of the rule's name, version and fields.
//!
//! `enc(x) = u32 big-endian length of x || x`; a key is
//! `HMAC-SHA256(key, enc("safetally") || enc(rule) || enc(version) || enc(field)...)`.
//! A rule whose fields are missing yields no key. Keys are never printed.

use hmac::{Hmac, Mac};
use sha2::Sha256;

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

/// Computes rule keys under one task-force key. Holds the keyed HMAC state
/// once so each key costs only the message's hashing.
#[derive(Clone)]
pub struct Keyer {
    /// The keyed state with each rule's name and version already fed.
    passport: Hmac<Sha256>,
    name_dob: Hmac<Sha256>,
    record: Hmac<Sha256>,
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
        let base = Hmac::<Sha256>::new_from_slice(key.bytes()).expect("any key length");
        let rule = |(name, version): (&str, &str)| {
            let mut mac = base.clone();
            encode_fields(
                &mut mac,
                &[b"safetally", name.as_bytes(), version.as_bytes()],
            );
            mac
        };
        Keyer {
            passport: rule(PASSPORT_RULE),
            name_dob: rule(NAME_DOB_RULE),
            record: rule(RECORD_RULE),
        }
    }

    fn rule<'a>(rule: &Hmac<Sha256>, fields: impl IntoIterator<Item = &'a [u8]>) -> Digest {
        let mut mac = rule.clone();
        for f in fields {
            mac.update(&(f.len() as u32).to_be_bytes());
            mac.update(f);
        }
        mac.finalize().into_bytes().into()
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
        }
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
