//! What text a client may put into Parley: the rules every text field shares.
//!
//! Applied to what clients send (the `parse` of each text value), never to
//! stored events: an event written under older rules must stay readable.

use unicode_normalization::UnicodeNormalization;
use unicode_properties::UnicodeEmoji;

use crate::error::DomainError;

/// Bidirectional embeddings, overrides and isolates (U+202A..U+202E,
/// U+2066..U+2069): they make text show in another order than it is stored in,
/// the "Trojan Source" trick for disguising names, links and code.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// Control characters other than newline and tab: C0, DEL and C1.
fn is_forbidden_control(c: char) -> bool {
    c != '\n' && c != '\t' && c.is_control()
}

/// NFC-normalizes client text and refuses control and bidi-override characters.
///
/// NUL in particular: PostgreSQL's `jsonb` cannot store `\u0000`, so without
/// this a NUL in a body was accepted on SQLite and a 500 on PostgreSQL.
pub fn clean(field: &str, raw: &str) -> Result<String, DomainError> {
    if let Some(c) = raw.chars().find(|&c| is_forbidden_control(c)) {
        return Err(DomainError::validation(
            field,
            format!(
                "must not contain control characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    if let Some(c) = raw.chars().find(|&c| is_bidi_control(c)) {
        return Err(DomainError::validation(
            field,
            format!(
                "must not contain bidirectional override characters (found U+{:04X})",
                c as u32
            ),
        ));
    }
    Ok(raw.nfc().collect())
}

/// [`clean`], after refusing text longer than `max` characters as sent: the
/// limit a client reads in the API document holds for what it sends, even
/// where trimming or normalizing would have made it fit.
pub fn clean_within(field: &str, raw: &str, max: usize) -> Result<String, DomainError> {
    if raw.chars().count() > max {
        return Err(DomainError::validation(
            field,
            format!("must be at most {max} characters"),
        ));
    }
    clean(field, raw)
}

/// Whether `s` is one emoji (possibly a ZWJ sequence, a flag, a keycap or a
/// skin-tone variant), judged by the Unicode emoji properties.
pub fn is_emoji(s: &str) -> bool {
    let mut pictographic = false;
    for c in s.chars() {
        if !c.is_emoji_char_or_emoji_component() {
            return false;
        }
        // Digits, '#' and '*' are emoji only inside a keycap sequence.
        if c.is_emoji_char() && !c.is_ascii() || c == '\u{20E3}' {
            pictographic = true;
        }
    }
    pictographic
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_nul_controls_and_bidi_overrides() {
        for bad in [
            "a\u{0}b",
            "bell\u{7}",
            "cr\r",
            "esc\u{1b}[31m",
            "del\u{7f}",
            "c1\u{85}",
            "evil\u{202E}txt.exe",
            "iso\u{2066}late",
        ] {
            assert!(clean("body", bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(clean("body", "a\tb\nc").unwrap(), "a\tb\nc");
    }

    /// The documented maximum holds for the text as sent: a name padded with
    /// spaces, or written decomposed, that would fit once trimmed or
    /// normalized is still too long.
    #[test]
    fn the_maximum_counts_what_was_sent() {
        let padded = format!("{} ", "a".repeat(64));
        assert!(clean_within("display_name", &padded, 64).is_err());
        let decomposed = "e\u{301}".repeat(33); // 66 characters, 33 once composed
        assert!(clean_within("display_name", decomposed.as_str(), 64).is_err());
        assert_eq!(
            clean_within("display_name", "e\u{301}", 64).unwrap(),
            "\u{e9}"
        );
        let fits = "a".repeat(64);
        assert_eq!(clean_within("display_name", &fits, 64).unwrap(), fits);
    }

    #[test]
    fn normalizes_to_nfc() {
        // "é" as e + combining acute becomes the one precomposed character.
        assert_eq!(clean("body", "e\u{301}").unwrap(), "\u{e9}");
    }

    #[test]
    fn knows_an_emoji_from_text() {
        for good in ["👍", "👍🏽", "👨‍👩‍👧", "🇫🇷", "1️⃣", "❤️", "🏴󠁧󠁢󠁳󠁣󠁴󠁿"]
        {
            assert!(is_emoji(good), "{good:?} refused");
        }
        for bad in [
            "",
            "a",
            "1",
            "#",
            ":thumbs_up:",
            "👍 ",
            "\u{200D}",
            "\u{FE0F}",
            "x👍",
        ] {
            assert!(!is_emoji(bad), "{bad:?} accepted");
        }
    }
}
