//! Normalisation of identity and coded fields, version [`NORMALISER_VERSION`].
//!
//! Specified in `docs/pseudonymisation.md` with input -> output tables; the
//! tests read those tables. Functions here return normalised values to the
//! caller only: they never log, print or put a value into an error.

use chrono::{Datelike, NaiveDate};
use unicode_normalization::UnicodeNormalization;
use unicode_normalization::char::is_combining_mark;

/// Version of these rules, stamped on every drop. Any change to the output
/// of a function here must bump it: keys of values whose normalisation
/// changed differ between versions.
pub const NORMALISER_VERSION: &str = "1";

/// Normalises free text (names, nationality words):
/// compatibility decomposition (NFKD), case folding, diacritical marks
/// removed (see [`is_diacritic`]), letters with a stroke folded (`đ` is `d`),
/// apostrophes removed, every other character that is not a letter or digit
/// to a space, spaces collapsed and trimmed, then recomposed (NFC).
pub fn normalise_text(raw: &str) -> String {
    if raw.is_ascii() {
        return normalise_ascii(raw);
    }
    normalise_unicode(raw)
}

/// [`normalise_text`] into `out` (cleared first): no allocation for ASCII
/// input once `out` has grown.
pub fn normalise_text_into(raw: &str, out: &mut String) {
    out.clear();
    if raw.is_ascii() {
        normalise_ascii_into(raw, out);
    } else {
        out.push_str(&normalise_unicode(raw));
    }
}

fn normalise_unicode(raw: &str) -> String {
    let folded = caseless::default_case_fold_str(&raw.nfkd().collect::<String>());
    let mut out = String::with_capacity(folded.len());
    let mut pending_space = false;
    for c in folded.nfkd() {
        if is_diacritic(c) || is_apostrophe(c) {
            continue;
        }
        if is_combining_mark(c) {
            // A kept mark (a vowel sign) belongs to the letter before it.
            if !out.is_empty() && !pending_space {
                out.push(c);
            }
            continue;
        }
        if c.is_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            match fold_stroke(c) {
                Some(folded) => out.push_str(folded),
                None => out.push(c),
            }
        } else {
            pending_space = true;
        }
    }
    out.nfc().collect()
}

fn normalise_ascii(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    normalise_ascii_into(raw, &mut out);
    out
}

fn normalise_ascii_into(raw: &str, out: &mut String) {
    let mut pending_space = false;
    for b in raw.bytes() {
        if b == b'\'' || b == b'`' {
            continue;
        }
        if b.is_ascii_alphanumeric() {
            if pending_space && !out.is_empty() {
                out.push(' ');
            }
            pending_space = false;
            out.push(b.to_ascii_lowercase() as char);
        } else {
            pending_space = true;
        }
    }
}

/// Diacritical marks: the combining marks of the Latin, Greek, Cyrillic,
/// Hebrew and Arabic scripts. Other marks (the vowel signs of Devanagari,
/// Thai, Burmese and other Brahmic scripts, Japanese voicing marks) are
/// kept: they are letters of the name, and removing them would make
/// different names equal (राम and रमा).
fn is_diacritic(c: char) -> bool {
    is_combining_mark(c)
        && matches!(c,
            '\u{0300}'..='\u{036F}'
            | '\u{0483}'..='\u{0489}'
            | '\u{0591}'..='\u{05C7}'
            | '\u{0610}'..='\u{061A}'
            | '\u{064B}'..='\u{065F}'
            | '\u{0670}'
            | '\u{06D6}'..='\u{06ED}'
            | '\u{1AB0}'..='\u{1AFF}'
            | '\u{1DC0}'..='\u{1DFF}'
            | '\u{20D0}'..='\u{20FF}'
            | '\u{FE20}'..='\u{FE2F}')
}

/// Latin letters with a stroke or ligatures that have no decomposition,
/// written without it as passports print them (Vietnamese `Đức` is `Duc`).
fn fold_stroke(c: char) -> Option<&'static str> {
    Some(match c {
        'đ' | 'ð' => "d",
        'ø' => "o",
        'ł' => "l",
        'ı' => "i",
        'ħ' => "h",
        'ŧ' => "t",
        'ƀ' => "b",
        'ɨ' => "i",
        'æ' => "ae",
        'œ' => "oe",
        'þ' => "th",
        _ => return None,
    })
}

fn is_apostrophe(c: char) -> bool {
    matches!(
        c,
        '\'' | '`' | '\u{2018}' | '\u{2019}' | '\u{02BC}' | '\u{02B9}'
    )
}

/// Tokens that join the following token of the same field ("Dela Cruz",
/// "de la Cruz" and "DelaCruz" all give `delacruz`).
/// Words that are also common names in the pilot's populations are left
/// out: Vietnamese `Văn`, `Lê`, `Đỗ`, `Du` (so Dutch `van` and French `le`
/// do not join).
const PARTICLES: [&str; 26] = [
    "al", "da", "das", "de", "del", "dela", "delas", "della", "delos", "den", "der", "di", "dos",
    "el", "la", "las", "los", "mac", "mc", "san", "santa", "santo", "st", "ten", "ter", "von",
];

/// Abbreviated particles and what they stand for ("Sta. Maria" is "Santa Maria").
const PARTICLE_ABBREVIATIONS: &[(&str, &str)] = &[("sta", "santa"), ("sto", "santo")];

/// Patronymic connectors, left out of name keys ("Ahmad bin Ismail" is
/// often written "Ahmad Ismail").
const CONNECTORS: [&str; 4] = ["bin", "binte", "binti", "bte"];

/// The name tokens of a person for the name key: both fields normalised,
/// connectors dropped, particles joined to the token they precede within
/// their field, then all tokens sorted, so neither token order nor which
/// field holds which name matters.
pub fn name_tokens(family: &str, given: &str) -> Vec<String> {
    let mut tokens = NameTokens::default();
    tokens.set(family, given);
    tokens.iter().map(str::to_string).collect()
}

/// [`name_tokens`] with buffers kept from one person to the next.
#[derive(Debug, Default)]
pub struct NameTokens {
    normalised: String,
    text: String,
    /// Each token's range in `text`, sorted by token.
    tokens: Vec<(u32, u32)>,
}

impl NameTokens {
    /// Replaces the tokens with those of this person.
    pub fn set(&mut self, family: &str, given: &str) {
        self.text.clear();
        self.tokens.clear();
        for field in [family, given] {
            normalise_text_into(field, &mut self.normalised);
            field_tokens(&self.normalised, &mut self.text, &mut self.tokens);
        }
        let text = &self.text;
        let token = |r: &(u32, u32)| &text[r.0 as usize..r.1 as usize];
        self.tokens.sort_unstable_by(|a, b| token(a).cmp(token(b)));
    }

    /// The tokens, sorted.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + Clone {
        self.tokens
            .iter()
            .map(|r| &self.text[r.0 as usize..r.1 as usize])
    }

    /// Whether there is no token.
    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }
}

/// A word of at most 8 bytes as a number (zero-padded): normalised text
/// holds no zero byte, so two such words are equal when their numbers are.
/// Every particle, abbreviation and connector is that short.
const fn word_key(w: &str) -> u64 {
    let w = w.as_bytes();
    let mut key = 0;
    let mut i = 0;
    while i < w.len() {
        key |= (w[i] as u64) << (8 * i);
        i += 1;
    }
    key
}

const fn word_keys<const N: usize>(words: &[&str; N]) -> [u64; N] {
    let mut keys = [0; N];
    let mut i = 0;
    while i < N {
        assert!(words[i].len() <= 8);
        keys[i] = word_key(words[i]);
        i += 1;
    }
    keys
}

const PARTICLE_KEYS: [u64; PARTICLES.len()] = word_keys(&PARTICLES);
const CONNECTOR_KEYS: [u64; CONNECTORS.len()] = word_keys(&CONNECTORS);

/// [`word_key`] of a word short enough to be a particle or connector.
fn short_key(w: &str) -> Option<u64> {
    (w.len() <= 8).then(|| word_key(w))
}

/// Appends the tokens of one normalised field to `text`, with their ranges.
fn field_tokens(normalised: &str, text: &mut String, out: &mut Vec<(u32, u32)>) {
    let mut words = normalised
        .split(' ')
        .filter(|w| !w.is_empty() && !short_key(w).is_some_and(|k| CONNECTOR_KEYS.contains(&k)))
        .peekable();
    let mut start = text.len();
    while let Some(w) = words.next() {
        let is_last = words.peek().is_none();
        let key = short_key(w);
        let expanded = PARTICLE_ABBREVIATIONS
            .iter()
            .find(|(abbr, _)| key == Some(word_key(abbr)))
            .map(|(_, full)| *full);
        let particle = expanded.unwrap_or(w);
        if !is_last && short_key(particle).is_some_and(|k| PARTICLE_KEYS.contains(&k)) {
            text.push_str(particle);
            continue;
        }
        text.push_str(w);
        out.push((start as u32, text.len() as u32));
        start = text.len();
    }
}

/// Why a passport number was refused (never carrying its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassportError {
    /// A character other than a letter, digit, space or dash.
    BadCharacter,
    /// Longer than 20 letters and digits.
    TooLong,
}

/// Normalises a passport number: compatibility forms folded (full-width
/// digits become ASCII), spaces and dashes removed, letters upper-cased.
/// Returns `Ok(None)` for a blank value.
pub fn normalise_passport(raw: &str) -> Result<Option<String>, PassportError> {
    let mut out = String::with_capacity(raw.len());
    normalise_passport_into(raw, &mut out)?;
    Ok((!out.is_empty()).then_some(out))
}

/// [`normalise_passport`] into `out` (cleared first); a blank value leaves
/// `out` empty.
pub fn normalise_passport_into(raw: &str, out: &mut String) -> Result<(), PassportError> {
    out.clear();
    if raw.is_ascii() {
        // NFKC leaves ASCII as it is.
        for b in raw.bytes() {
            match b {
                b'a'..=b'z' => out.push(b.to_ascii_uppercase() as char),
                b'A'..=b'Z' | b'0'..=b'9' => out.push(b as char),
                b' ' | b'-' | b'\t' => {}
                _ => return Err(PassportError::BadCharacter),
            }
        }
    } else {
        passport_chars(raw.nfkc(), out)?;
    }
    if out.len() > 20 {
        return Err(PassportError::TooLong);
    }
    Ok(())
}

fn passport_chars(
    chars: impl Iterator<Item = char>,
    out: &mut String,
) -> Result<(), PassportError> {
    for c in chars {
        match c {
            'a'..='z' => out.push(c.to_ascii_uppercase()),
            'A'..='Z' | '0'..='9' => out.push(c),
            ' ' | '-' | '\u{2010}'..='\u{2015}' | '\u{00A0}' | '\t' => {}
            _ => return Err(PassportError::BadCharacter),
        }
    }
    Ok(())
}

/// Why a date was refused (never carrying its value).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DateError {
    /// Not in an accepted format.
    Format,
    /// In an accepted format but no such day exists (31/02/2018).
    NoSuchDay,
}

/// Parses an event date: `YYYY-MM-DD` (a time of day after it, as Excel
/// writes, is ignored), `DD/MM/YYYY` or `D/M/YYYY`.
pub fn parse_date(raw: &str) -> Result<NaiveDate, DateError> {
    parse_plain_date(raw.as_bytes()).unwrap_or_else(|| parse_any_date(raw))
}

/// [`parse_date`] of a value made only of digits, `-` and `/` (no white
/// space or time to cut), on bytes; `None` for other values.
fn parse_plain_date(b: &[u8]) -> Option<Result<NaiveDate, DateError>> {
    if b.is_empty() || b.len() > 10 || !b.iter().all(|c| matches!(c, b'0'..=b'9' | b'-' | b'/')) {
        return None;
    }
    fn split(p: &[u8], sep: u8) -> Option<(&[u8], &[u8])> {
        p.iter()
            .position(|c| *c == sep)
            .map(|i| (&p[..i], &p[i + 1..]))
    }
    let num = |p: &[u8], max_len: usize| -> Result<u32, DateError> {
        if p.is_empty() || p.len() > max_len || !p.iter().all(u8::is_ascii_digit) {
            return Err(DateError::Format);
        }
        Ok(p.iter().fold(0, |n, c| n * 10 + (c - b'0') as u32))
    };
    let parts = if let Some((y, rest)) = split(b, b'-') {
        split(rest, b'-').map(|(m, d)| (y, m, d))
    } else if let Some((d, rest)) = split(b, b'/') {
        split(rest, b'/').map(|(m, y)| (y, m, d))
    } else {
        None
    };
    let Some((y, m, d)) = parts.filter(|(y, _, _)| y.len() == 4) else {
        return Some(Err(DateError::Format));
    };
    Some((|| {
        let (y, m, d) = (num(y, 4)? as i32, num(m, 2)?, num(d, 2)?);
        NaiveDate::from_ymd_opt(y, m, d).ok_or(DateError::NoSuchDay)
    })())
}

fn parse_any_date(raw: &str) -> Result<NaiveDate, DateError> {
    let s = raw.trim();
    let s = s
        .split_once(['T', ' '])
        .map_or(s, |(date, _time)| date)
        .trim();
    let (y, m, d) = if let Some((y, rest)) = s.split_once('-') {
        let (m, d) = rest.split_once('-').ok_or(DateError::Format)?;
        if y.len() != 4 {
            return Err(DateError::Format);
        }
        (y, m, d)
    } else if let Some((d, rest)) = s.split_once('/') {
        let (m, y) = rest.split_once('/').ok_or(DateError::Format)?;
        if y.len() != 4 {
            return Err(DateError::Format);
        }
        (y, m, d)
    } else {
        return Err(DateError::Format);
    };
    let num = |p: &str, max_len: usize| -> Result<u32, DateError> {
        if p.is_empty() || p.len() > max_len || !p.bytes().all(|b| b.is_ascii_digit()) {
            return Err(DateError::Format);
        }
        p.parse().map_err(|_| DateError::Format)
    };
    let (y, m, d) = (num(y, 4)? as i32, num(m, 2)?, num(d, 2)?);
    NaiveDate::from_ymd_opt(y, m, d).ok_or(DateError::NoSuchDay)
}

/// A date of birth: a full date, or a year alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BirthDate {
    /// The full date is known.
    Full(NaiveDate),
    /// Only the year is known.
    Year(i32),
}

impl BirthDate {
    /// The year of birth.
    pub fn year(self) -> i32 {
        match self {
            BirthDate::Full(d) => d.year(),
            BirthDate::Year(y) => y,
        }
    }

    /// Age in whole years on `at`. With the year alone, the age reached
    /// during `at`'s year (it may be one more than the true age).
    pub fn age_at(self, at: NaiveDate) -> i32 {
        match self {
            BirthDate::Full(b) => {
                let mut age = at.year() - b.year();
                if (at.month(), at.day()) < (b.month(), b.day()) {
                    age -= 1;
                }
                age
            }
            BirthDate::Year(y) => at.year() - y,
        }
    }

    /// Whether the birth date lies after `day` (for a year alone: a later year).
    pub fn is_after(self, day: NaiveDate) -> bool {
        match self {
            BirthDate::Full(b) => b > day,
            BirthDate::Year(y) => y > day.year(),
        }
    }
}

/// Parses a date of birth: any event date format, or `YYYY` alone.
pub fn parse_birth_date(raw: &str) -> Result<BirthDate, DateError> {
    let s = raw.trim();
    if s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()) {
        return Ok(BirthDate::Year(s.parse().map_err(|_| DateError::Format)?));
    }
    parse_date(s).map(BirthDate::Full)
}

/// The age band at the event, as DESIGN.md lists them.
pub fn age_band(age: i32) -> &'static str {
    match age {
        i32::MIN..=17 => "0-17",
        18..=25 => "18-25",
        26..=35 => "26-35",
        36..=45 => "36-45",
        _ => "46+",
    }
}

/// The age bands in order, then the label used for unknown.
pub const AGE_BANDS: [&str; 5] = ["0-17", "18-25", "26-35", "36-45", "46+"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ascii_fast_path_agrees_with_full_path() {
        for s in [
            "  Dela-Cruz, Juan ",
            "O'Brien",
            "MARIA  sta. maria",
            "a__b",
            "x`y",
        ] {
            let mut with_marker = s.to_string();
            with_marker.push('\u{00E9}');
            let full = normalise_text(&with_marker);
            let expected = format!("{}e", normalise_ascii(s));
            // The marker adds an "e" at the end (é loses its mark): the rest
            // must agree.
            assert_eq!(full.replace(' ', ""), expected.replace(' ', ""), "{s}");
        }
    }

    #[test]
    fn plain_dates_parse_as_any_date_does() {
        let pieces = [
            "2018", "18", "1", "03", "31", "0", "", "123", "12345", "29", "02",
        ];
        let mut n = 0;
        for a in pieces {
            for b in pieces {
                for c in pieces {
                    for (s1, s2) in [("-", "-"), ("/", "/"), ("-", "/"), ("/", "-"), ("--", "")] {
                        let v = format!("{a}{s1}{b}{s2}{c}");
                        if let Some(fast) = parse_plain_date(v.as_bytes()) {
                            assert_eq!(fast, parse_any_date(&v), "{v}");
                            n += 1;
                        }
                    }
                }
            }
        }
        assert!(n > 3000, "{n}");
    }

    #[test]
    fn dates_that_do_not_exist_are_refused() {
        assert_eq!(parse_date("31/02/2018"), Err(DateError::NoSuchDay));
        assert_eq!(parse_date("2018-13-01"), Err(DateError::NoSuchDay));
        assert_eq!(parse_date("18-01-01"), Err(DateError::Format));
        assert_eq!(parse_date("01/01/18"), Err(DateError::Format));
        assert_eq!(parse_date("yesterday"), Err(DateError::Format));
    }

    #[test]
    fn age_with_full_date_counts_birthdays() {
        let b = BirthDate::Full(NaiveDate::from_ymd_opt(2000, 6, 15).unwrap());
        assert_eq!(b.age_at(NaiveDate::from_ymd_opt(2018, 6, 14).unwrap()), 17);
        assert_eq!(b.age_at(NaiveDate::from_ymd_opt(2018, 6, 15).unwrap()), 18);
        assert_eq!(age_band(17), "0-17");
        assert_eq!(age_band(18), "18-25");
        assert_eq!(age_band(46), "46+");
    }

    #[test]
    fn passport_rejects_other_characters_without_echoing() {
        assert_eq!(
            normalise_passport("P12/34"),
            Err(PassportError::BadCharacter)
        );
        assert_eq!(normalise_passport("  "), Ok(None));
    }
}
