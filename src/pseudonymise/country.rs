//! Nationality: an English country name, a demonym, or an ISO 3166-1
//! alpha-2 or alpha-3 code, to the alpha-3 code. The reference table is
//! `schemas/countries.tsv`; `docs/pseudonymisation.md` lists every accepted
//! word and the tests read that list.

use rustc_hash::FxHashMap as HashMap;
use std::sync::LazyLock;

use super::normalise::normalise_text;

/// One country of the reference table.
#[derive(Debug)]
pub struct Country {
    /// ISO 3166-1 alpha-2 code.
    pub alpha2: &'static str,
    /// ISO 3166-1 alpha-3 code (what drops store).
    pub alpha3: &'static str,
    /// Everyday English name.
    pub name: &'static str,
    /// Other English names.
    pub aliases: Vec<&'static str>,
    /// Demonyms.
    pub demonyms: Vec<&'static str>,
}

/// Why a nationality was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NationalityError {
    /// Not a country name, demonym or code we know.
    Unknown,
    /// A word several countries share ("Congolese"): the alpha-3 codes.
    Ambiguous(Vec<&'static str>),
    /// A word staff write for "not known" (`N/A`, `none`): the cell should
    /// be blank. `NA` and `NO` are also Namibia's and Norway's codes, so
    /// they are refused rather than guessed.
    Placeholder,
}

struct Table {
    countries: Vec<Country>,
    /// Each country's alpha-3 code, in the order of `countries`.
    alpha3: Vec<&'static str>,
    lookup: HashMap<String, Vec<usize>>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| {
    let text: &'static str = include_str!("../../schemas/countries.tsv");
    let mut countries = Vec::new();
    let mut lines = text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    let header = lines.next().expect("countries.tsv has a header");
    assert_eq!(header, "alpha2\talpha3\tname\taliases\tdemonyms");
    for line in lines {
        let f: Vec<&'static str> = line.split('\t').collect();
        assert_eq!(f.len(), 5, "countries.tsv: {line}");
        let list = |s: &'static str| -> Vec<&'static str> {
            s.split(';')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .collect()
        };
        countries.push(Country {
            alpha2: f[0],
            alpha3: f[1],
            name: f[2],
            aliases: list(f[3]),
            demonyms: list(f[4]),
        });
    }
    let mut lookup: HashMap<String, Vec<usize>> = HashMap::default();
    for (i, c) in countries.iter().enumerate() {
        let words = [c.alpha2, c.alpha3, c.name]
            .into_iter()
            .chain(c.aliases.iter().copied())
            .chain(c.demonyms.iter().copied());
        for w in words {
            let entry = lookup.entry(squashed_key(w)).or_default();
            if !entry.contains(&i) {
                entry.push(i);
            }
        }
    }
    let alpha3 = countries.iter().map(|c| c.alpha3).collect();
    Table {
        countries,
        alpha3,
        lookup,
    }
});

/// Squashed words that mean "not known" rather than a country.
const PLACEHOLDERS: &[&str] = &[
    "na",
    "no",
    "none",
    "nil",
    "unknown",
    "notknown",
    "notapplicable",
    "notavailable",
    "nk",
];

/// The comparison form of a word: normalised, without a leading "the" and
/// without spaces ("The Philippines" is "philippines", "Viet Nam" is
/// "vietnam").
fn squashed_key(raw: &str) -> String {
    let n = normalise_text(raw);
    let n = n.strip_prefix("the ").unwrap_or(&n);
    n.chars().filter(|c| *c != ' ').collect()
}

/// [`squashed_key`] of a short ASCII word, built in `buf` without
/// allocating; `None` for other words. For ASCII, normalising keeps the
/// letters and digits (lower-cased) of each word, a word being a run of
/// them between other characters (apostrophes do not split words).
fn squashed_ascii<'b>(raw: &str, buf: &'b mut [u8; 64]) -> Option<&'b str> {
    if !raw.is_ascii() || raw.len() > buf.len() {
        return None;
    }
    let mut n = 0;
    // The end of the first word, once a second word starts.
    let mut first_end = None;
    let mut gap = false;
    for b in raw.bytes() {
        if b == b'\'' || b == b'`' {
            continue;
        }
        if b.is_ascii_alphanumeric() {
            if gap && n > 0 && first_end.is_none() {
                first_end = Some(n);
            }
            gap = false;
            buf[n] = b.to_ascii_lowercase();
            n += 1;
        } else {
            gap = true;
        }
    }
    let skip = if first_end == Some(3) && &buf[..3] == b"the" {
        3
    } else {
        0
    };
    std::str::from_utf8(&buf[skip..n]).ok()
}

/// Every country of the reference table, sorted by alpha-3 code.
pub fn countries() -> &'static [Country] {
    &TABLE.countries
}

/// The alpha-3 code of each of [`countries`], in the same order.
pub fn alpha3_codes() -> &'static [&'static str] {
    &TABLE.alpha3
}

/// Resolves a raw nationality to its ISO 3166-1 alpha-3 code.
/// Returns `Ok(None)` for a blank value (unknown).
pub fn nationality(raw: &str) -> Result<Option<&'static str>, NationalityError> {
    nationality_index(raw).map(|i| i.map(|i| TABLE.countries[i].alpha3))
}

/// As [`nationality`], the country's index in [`countries`].
pub fn nationality_index(raw: &str) -> Result<Option<usize>, NationalityError> {
    if raw.trim().is_empty() {
        return Ok(None);
    }
    let mut buf = [0u8; 64];
    let owned;
    let key = match squashed_ascii(raw, &mut buf) {
        Some(key) => key,
        None => {
            owned = squashed_key(raw);
            owned.as_str()
        }
    };
    if PLACEHOLDERS.contains(&key) {
        return Err(NationalityError::Placeholder);
    }
    match TABLE.lookup.get(key).map(Vec::as_slice) {
        Some([one]) => Ok(Some(*one)),
        Some(many) if !many.is_empty() => Err(NationalityError::Ambiguous(
            many.iter().map(|i| TABLE.countries[*i].alpha3).collect(),
        )),
        _ => Err(NationalityError::Unknown),
    }
}

/// The country with this alpha-3 code.
pub fn by_alpha3(alpha3: &str) -> Option<&'static Country> {
    TABLE.countries.iter().find(|c| c.alpha3 == alpha3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pilot_nationalities_resolve() {
        for s in ["Indonesia", "indonesian", "ID", "IDN", " idn "] {
            assert_eq!(nationality(s), Ok(Some("IDN")), "{s}");
        }
        for s in [
            "Philippines",
            "The Philippines",
            "Filipino",
            "Filipina",
            "PH",
            "phl",
        ] {
            assert_eq!(nationality(s), Ok(Some("PHL")), "{s}");
        }
        assert_eq!(nationality(""), Ok(None));
        assert_eq!(nationality("Atlantis"), Err(NationalityError::Unknown));
    }

    #[test]
    fn ascii_keys_are_built_as_the_normaliser_builds_them() {
        let words = [
            "The Philippines",
            "the",
            "The",
            "thE  gambia ",
            "Thebes",
            "the-the",
            "  The  ",
            "t'he x",
            "Côte",
            "N/A",
            "Viet Nam",
            "'the' x",
            "x the",
            "",
            "--",
            "Lao P.D.R.",
            "the 1",
        ];
        for w in words {
            let mut buf = [0u8; 64];
            match squashed_ascii(w, &mut buf) {
                Some(k) => assert_eq!(k, squashed_key(w), "{w}"),
                None => assert!(!w.is_ascii(), "{w}"),
            }
        }
        for c in countries() {
            for w in [c.name, c.alpha2, c.alpha3]
                .into_iter()
                .chain(c.aliases.iter().copied())
                .chain(c.demonyms.iter().copied())
            {
                let mut buf = [0u8; 64];
                if let Some(k) = squashed_ascii(w, &mut buf) {
                    assert_eq!(k, squashed_key(w), "{w}");
                }
            }
        }
    }

    #[test]
    fn table_is_complete_and_codes_unique() {
        let c = countries();
        assert!(c.len() >= 249, "{}", c.len());
        let mut a3: Vec<_> = c.iter().map(|c| c.alpha3).collect();
        a3.sort_unstable();
        a3.dedup();
        assert_eq!(a3.len(), c.len());
        for country in c {
            assert_eq!(nationality(country.alpha3), Ok(Some(country.alpha3)));
            if matches!(country.alpha2, "NA" | "NO") {
                assert_eq!(
                    nationality(country.alpha2),
                    Err(NationalityError::Placeholder)
                );
            } else {
                assert_eq!(nationality(country.alpha2), Ok(Some(country.alpha3)));
            }
            assert_eq!(
                nationality(country.name),
                Ok(Some(country.alpha3)),
                "{}",
                country.name
            );
        }
    }
}
