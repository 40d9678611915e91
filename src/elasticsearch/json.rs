//! JSON string literals as Jackson's UTF-8 generator writes them, which differs from
//! `serde_json`: characters outside the Basic Multilingual Plane become two `\uXXXX` surrogate
//! escapes, and the lone surrogates a Java string may hold are escaped too.

/// Appends `s` to `out` as a JSON string literal, escaped the way Jackson escapes it.
pub fn write_json_string(out: &mut Vec<u8>, s: &str) {
    write_json_wtf8(out, s.as_bytes());
}

/// Appends a JSON string literal for WTF-8 text: UTF-8 that may also hold lone surrogates
/// (encoded as the 3-byte sequences `ED A0 80`..`ED BF BF`), as a Java string can. Jackson's UTF-8
/// generator escapes `"`, `\\` and control characters, writes other BMP characters raw, and writes
/// every UTF-16 surrogate (of a pair, or alone) as a `\uXXXX` escape.
pub fn write_json_wtf8(out: &mut Vec<u8>, s: &[u8]) {
    out.push(b'"');
    let mut i = 0;
    let mut start = 0;
    while i < s.len() {
        let b = s[i];
        let (len, escape) = match b {
            b'"' => (1, Escape::Short(b"\\\"")),
            b'\\' => (1, Escape::Short(b"\\\\")),
            b'\n' => (1, Escape::Short(b"\\n")),
            b'\r' => (1, Escape::Short(b"\\r")),
            b'\t' => (1, Escape::Short(b"\\t")),
            0x08 => (1, Escape::Short(b"\\b")),
            0x0c => (1, Escape::Short(b"\\f")),
            0x00..=0x1f => (1, Escape::Units([u16::from(b), 0], 1)),
            0x20..=0x7f => {
                i += 1;
                continue;
            }
            0xED if s.get(i + 1).is_some_and(|c| *c >= 0xA0) && i + 2 < s.len() => {
                let unit = 0xD000 | (u16::from(s[i + 1] & 0x3F) << 6) | u16::from(s[i + 2] & 0x3F);
                (3, Escape::Units([unit, 0], 1))
            }
            0xF0..=0xF4 if i + 3 < s.len() => {
                let c = (u32::from(b & 0x07) << 18)
                    | (u32::from(s[i + 1] & 0x3F) << 12)
                    | (u32::from(s[i + 2] & 0x3F) << 6)
                    | u32::from(s[i + 3] & 0x3F);
                let c = c.saturating_sub(0x1_0000);
                let high = 0xD800 | ((c >> 10) & 0x3FF) as u16;
                let low = 0xDC00 | (c & 0x3FF) as u16;
                (4, Escape::Units([high, low], 2))
            }
            _ => {
                i += 1;
                continue;
            }
        };
        out.extend_from_slice(&s[start..i]);
        match escape {
            Escape::Short(e) => out.extend_from_slice(e),
            Escape::Units(units, n) => {
                for unit in &units[..n] {
                    push_unicode_escape(out, *unit);
                }
            }
        }
        i += len;
        start = i;
    }
    out.extend_from_slice(&s[start..]);
    out.push(b'"');
}

enum Escape {
    Short(&'static [u8]),
    Units([u16; 2], usize),
}

/// Writes `\uXXXX` with upper-case hex digits, as Jackson does.
pub fn push_unicode_escape(out: &mut Vec<u8>, unit: u16) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    out.extend_from_slice(b"\\u");
    for shift in [12, 8, 4, 0] {
        out.push(HEX[usize::from((unit >> shift) & 0xF)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn escaped(s: &str) -> String {
        let mut out = Vec::new();
        write_json_string(&mut out, s);
        String::from_utf8(out).expect("escaping keeps UTF-8")
    }

    #[test]
    fn escapes_like_jackson() {
        assert_eq!(escaped("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(escaped("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(escaped("\u{0}\u{1f}"), r#""\u0000\u001F""#);
        assert_eq!(escaped("é/ü"), "\"é/ü\"");
        assert_eq!(escaped("😀"), r#""\uD83D\uDE00""#);
    }

    #[test]
    fn lone_surrogates_in_wtf8_are_escaped() {
        let mut out = Vec::new();
        write_json_wtf8(&mut out, b"a\xED\xA0\x80b\xED\xBF\xBF");
        assert_eq!(out, br#""a\uD800b\uDFFF""#);
    }
}
