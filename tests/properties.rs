//! Property tests: normalisation is idempotent; name keys depend neither on
//! token order nor on which field holds which token.

use proptest::prelude::*;
use safetally::key::TaskForceKey;
use safetally::pseudonymise::matchkeys::Keyer;
use safetally::pseudonymise::normalise::{name_tokens, normalise_passport, normalise_text};

/// Name-like strings over several scripts, marks, punctuation and spaces.
fn name_text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            "[a-zA-Z]{1,8}",
            "[àáâãäåçèéêëìíîïñòóôõöùúûüýÿßĀāĒēŌō]{1,4}",
            "[а-яА-Я]{1,6}",
            "[α-ωΑ-Ω]{1,6}",
            "[ก-ฮ]{1,5}",
            "[가-힣]{1,3}",
            "[一-龥]{1,3}",
            "[ء-ي]{1,5}",
            "[ \t.,'’\\-]{1,3}",
            "[\u{0300}-\u{036f}]",
            "[０-９Ａ-Ｚ]{1,3}",
            Just("de la".to_string()),
            Just("Sta.".to_string()),
            Just("bin".to_string()),
        ],
        0..6,
    )
    .prop_map(|parts| parts.join(""))
}

/// Simple name words (no particles) for order tests.
fn word() -> impl Strategy<Value = String> {
    "[A-Za-zÀ-ÖØ-öø-ÿ]{2,10}".prop_filter("not a particle or connector", |w| {
        // A particle joins the next token ("St" in "St Anne"): keep words
        // that stay one token whatever follows them.
        let alone = normalise_text(w);
        let mut expected = vec![alone.clone(), "zz".to_string()];
        expected.sort();
        !alone.contains(' ') && name_tokens(&format!("{w} zz"), "") == expected
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn normalise_text_is_idempotent(s in name_text()) {
        let once = normalise_text(&s);
        prop_assert_eq!(normalise_text(&once), once.clone());
        prop_assert!(!once.starts_with(' ') && !once.ends_with(' ') && !once.contains("  "));
    }

    #[test]
    fn normalise_passport_is_idempotent(s in "[a-zA-Z0-9 \\-]{0,12}") {
        if let Ok(Some(p)) = normalise_passport(&s) {
            prop_assert_eq!(normalise_passport(&p), Ok(Some(p.clone())));
        }
    }

    #[test]
    fn name_key_ignores_token_order_and_field(
        words in prop::collection::vec(word(), 1..5),
        split in 0usize..5,
        seed in any::<u64>(),
    ) {
        let keyer = Keyer::new(&TaskForceKey::from_bytes([9; 32]));
        let split = split.min(words.len());
        let key = |family: &[String], given: &[String]| {
            keyer.name_dob(&name_tokens(&family.join(" "), &given.join(" ")), Some("1990-01-02"))
        };
        let reference = key(&words[..split], &words[split..]);
        prop_assert!(reference.is_some());
        // Any other order and any other split between the two fields.
        let mut shuffled = words.clone();
        let mut x = seed;
        for i in (1..shuffled.len()).rev() {
            x = x.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            shuffled.swap(i, (x >> 33) as usize % (i + 1));
        }
        let other_split = (seed as usize) % (shuffled.len() + 1);
        prop_assert_eq!(key(&shuffled[..other_split], &shuffled[other_split..]), reference);
        prop_assert_eq!(key(&words[split..], &words[..split]), reference);
        // Case does not matter either.
        let upper: Vec<String> = words.iter().map(|w| w.to_uppercase()).collect();
        prop_assert_eq!(key(&upper[..split], &upper[split..]), reference);
    }
}
