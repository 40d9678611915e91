//! Java's own string rules, as Elasticsearch's code meets them through the JDK.
//!
//! Elasticsearch splits, trims, compares and decodes with `java.lang.String` and `Character`,
//! whose rules differ from Rust's in small ways that show in its answers (which characters are
//! white space, how malformed UTF-8 is replaced, what `equalsIgnoreCase` folds). They live here
//! together so that every module of the model uses the same ones.

use std::cmp::Ordering;

/// Java's `String.split` on one separator character: trailing empty strings are dropped (so a
/// string made only of separators gives nothing), and a string without the separator gives itself.
pub fn java_split(s: &[u8], separator: u8) -> Vec<&[u8]> {
    if !s.contains(&separator) {
        return vec![s];
    }
    let mut parts: Vec<&[u8]> = s.split(|b| *b == separator).collect();
    while parts.last().is_some_and(|p| p.is_empty()) {
        parts.pop();
    }
    parts
}

/// `String.toLowerCase(Locale.ROOT)` for the ISO-8859-1 strings headers are.
pub fn java_lower_case(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            'A'..='Z' | '\u{C0}'..='\u{D6}' | '\u{D8}'..='\u{DE}' => char::from_u32(c as u32 + 0x20).unwrap_or(c),
            c => c,
        })
        .collect()
}

/// Java's `String.trim()`: every char up to U+0020 off both ends.
pub fn java_trim(s: &[u8]) -> &[u8] {
    let start = s.iter().position(|&b| b > b' ').unwrap_or(s.len());
    let end = s.iter().rposition(|&b| b > b' ').map_or(start, |i| i + 1);
    &s[start..end.max(start)]
}

/// `Byte.parseByte`: an optional sign and ASCII digits, in `-128..=127`; `None` where Java throws
/// `NumberFormatException`.
pub fn parse_java_byte(s: &str) -> Option<i8> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse::<i8>().ok()
}

/// Java's `Character.isWhitespace`.
pub fn is_java_whitespace(c: char) -> bool {
    matches!(
        c,
        '\u{9}'..='\u{D}'
            | '\u{1C}'..='\u{20}'
            | '\u{1680}'
            | '\u{2000}'..='\u{2006}'
            | '\u{2008}'..='\u{200A}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{205F}'
            | '\u{3000}'
    )
}

/// Java's `String.equalsIgnoreCase` against an ASCII `target`. Besides ASCII case, the only
/// characters that match an ASCII letter there are those whose simple upper or lower case is one:
/// `ſ` (→ S), `ı` (→ I), the Kelvin sign (→ k) and `İ` (→ i).
pub fn java_equals_ignore_case(s: &str, target: &str) -> bool {
    let fold = |c: char| match c {
        '\u{17F}' => 's',
        '\u{131}' | '\u{130}' => 'i',
        '\u{212A}' => 'k',
        c => c.to_ascii_lowercase(),
    };
    s.chars().count() == target.len() && s.chars().map(fold).eq(target.chars().map(|c| c.to_ascii_lowercase()))
}

/// Java's `String.compareTo`: lexicographic over UTF-16 units.
pub fn java_cmp(a: &str, b: &str) -> Ordering {
    a.encode_utf16().cmp(b.encode_utf16())
}

/// `Character.isJavaIdentifierStart(char)`: letters, letter numbers, currency symbols and
/// connector punctuation.
pub fn is_java_identifier_start(c: u32) -> bool {
    use unicode_general_category::GeneralCategory as G;
    match char::from_u32(c).map(unicode_general_category::get_general_category) {
        Some(cat) => matches!(
            cat,
            G::UppercaseLetter
                | G::LowercaseLetter
                | G::TitlecaseLetter
                | G::ModifierLetter
                | G::OtherLetter
                | G::LetterNumber
                | G::CurrencySymbol
                | G::ConnectorPunctuation
        ),
        None => false,
    }
}

/// `Character.isJavaIdentifierPart(char)`: the start characters, digits, marks, and the
/// "ignorable" ones (most controls and format characters).
pub fn is_java_identifier_part(c: u16) -> bool {
    use unicode_general_category::GeneralCategory as G;
    if matches!(c, 0x00..=0x08 | 0x0E..=0x1B | 0x7F..=0x9F) {
        return true;
    }
    is_java_identifier_start(u32::from(c))
        || matches!(
            general_category(c),
            Some(G::DecimalNumber | G::SpacingMark | G::NonspacingMark | G::Format)
        )
}

/// The general category of a UTF-16 unit; `None` for surrogates (category Cs).
pub fn general_category(c: u16) -> Option<unicode_general_category::GeneralCategory> {
    char::from_u32(u32::from(c)).map(unicode_general_category::get_general_category)
}

/// `new String(bytes, UTF_8)` as Java decodes it: each malformed sequence becomes one U+FFFD by
/// the JDK's rules (a UTF-8-encoded surrogate is one malformed sequence of three bytes, where
/// Rust's `from_utf8_lossy` sees three), and a sequence cut by the end of the input ends the text.
pub fn java_utf8_lossy(src: &[u8]) -> String {
    const REPL: char = '\u{FFFD}';
    let cont = |b: u8| b & 0xC0 == 0x80;
    let mut out = String::with_capacity(src.len());
    let mut sp = 0;
    let sl = src.len();
    while sp < sl {
        let b1 = src[sp];
        sp += 1;
        if b1 < 0x80 {
            out.push(char::from(b1));
        } else if b1 >> 5 == 0b110 && b1 & 0x1E != 0 {
            if sp < sl {
                let b2 = src[sp];
                sp += 1;
                if !cont(b2) {
                    out.push(REPL);
                    sp -= 1;
                } else {
                    let c = (u32::from(b1 & 0x1F) << 6) | u32::from(b2 & 0x3F);
                    out.push(char::from_u32(c).unwrap_or(REPL));
                }
                continue;
            }
            out.push(REPL);
            break;
        } else if b1 >> 4 == 0b1110 {
            let malformed3_2 = |b2: u8| (b1 == 0xE0 && b2 & 0xE0 == 0x80) || !cont(b2);
            if sp + 1 < sl {
                let (b2, b3) = (src[sp], src[sp + 1]);
                sp += 2;
                if malformed3_2(b2) || !cont(b3) {
                    out.push(REPL);
                    sp -= 2;
                    sp += usize::from(!malformed3_2(b2));
                } else {
                    let c = (u32::from(b1 & 0x0F) << 12) | (u32::from(b2 & 0x3F) << 6) | u32::from(b3 & 0x3F);
                    out.push(char::from_u32(c).unwrap_or(REPL));
                }
                continue;
            }
            if sp < sl && malformed3_2(src[sp]) {
                out.push(REPL);
                continue;
            }
            out.push(REPL);
            break;
        } else if b1 >> 3 == 0b11110 {
            let malformed4_2 =
                |b2: u8| (b1 == 0xF0 && !(0x90..=0xBF).contains(&b2)) || (b1 == 0xF4 && b2 & 0xF0 != 0x80) || !cont(b2);
            if sp + 2 < sl {
                let (b2, b3, b4) = (src[sp], src[sp + 1], src[sp + 2]);
                sp += 3;
                let c = (u32::from(b1 & 0x07) << 18)
                    | (u32::from(b2 & 0x3F) << 12)
                    | (u32::from(b3 & 0x3F) << 6)
                    | u32::from(b4 & 0x3F);
                if !cont(b2) || !cont(b3) || !cont(b4) || !(0x10000..=0x10FFFF).contains(&c) {
                    out.push(REPL);
                    sp -= 3;
                    sp += if b1 > 0xF4 || malformed4_2(b2) {
                        0
                    } else if !cont(b3) {
                        1
                    } else {
                        2
                    };
                } else {
                    out.push(char::from_u32(c).unwrap_or(REPL));
                }
                continue;
            }
            if b1 > 0xF4 || (sp < sl && malformed4_2(src[sp])) {
                out.push(REPL);
                continue;
            }
            sp += 1;
            out.push(REPL);
            if sp < sl && !cont(src[sp]) {
                continue;
            }
            break;
        } else {
            out.push(REPL);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_order_is_utf16_order() {
        // U+FF21 sorts after U+1F600 in UTF-8 byte order, before it in UTF-16.
        assert_eq!(java_cmp("\u{FF21}", "😀"), Ordering::Greater);
        assert_eq!("\u{FF21}".cmp("😀"), Ordering::Less);
        assert_eq!(java_cmp("a", "b"), Ordering::Less);
    }
}
