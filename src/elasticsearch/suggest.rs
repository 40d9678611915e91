//! "Did you mean" suggestions, computed as Elasticsearch computes them (`docs/connector-error.md`,
//! "Query parameters"): Lucene's `LevenshteinDistance` similarity over UTF-16 units, in `f32`, a candidate kept
//! when its similarity is `> 0.5f`, the kept ones ordered by similarity (highest first), then by
//! name.
//!
//! The arithmetic is `f32` on purpose: Lucene returns a Java `float`, and a similarity that lands
//! near the 0.5 threshold must fall on the same side as in Elasticsearch. Names are compared as
//! Java compares strings (UTF-16 units), which orders characters outside the Basic Multilingual
//! Plane differently from Rust's `str` ordering.

use super::java::java_cmp;

/// Lucene `LevenshteinDistance.getDistance(a, b)`:
/// `1.0f - ((float) editDistance / Math.max(a.length, b.length))`, `1` for two empty strings and
/// `0` when only one is empty.
pub fn similarity(a: &[u16], b: &[u16]) -> f32 {
    let (n, m) = (a.len(), b.len());
    if n == 0 || m == 0 {
        return if n == m { 1.0 } else { 0.0 };
    }
    // Two rows of the edit-distance matrix, as Lucene keeps them.
    let mut previous: Vec<usize> = (0..=n).collect();
    let mut current = vec![0usize; n + 1];
    for (j, &unit) in b.iter().enumerate() {
        current[0] = j + 1;
        for i in 1..=n {
            let cost = usize::from(a[i - 1] != unit);
            current[i] = (current[i - 1] + 1).min(previous[i] + 1).min(previous[i - 1] + cost);
        }
        std::mem::swap(&mut previous, &mut current);
    }
    // Java converts both ints to float (round to nearest) and divides in float.
    1.0f32 - (previous[n] as f32 / n.max(m) as f32)
}

/// The candidates Elasticsearch would suggest for `unknown`: similarity `> 0.5f`, highest
/// similarity first, equal similarities in Java string order (`SuggestingErrorOnUnknown`,
/// `BaseRestHandler.unrecognized`).
pub fn ranked<'a>(unknown: &[u16], candidates: &[&'a str]) -> Vec<&'a str> {
    let mut scored: Vec<(f32, &'a str)> = candidates
        .iter()
        .map(|c| (similarity(unknown, &utf16(c)), *c))
        .filter(|(s, _)| *s > 0.5f32)
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| java_cmp(a.1, b.1)));
    scored.into_iter().map(|(_, c)| c).collect()
}

/// The suffix `SuggestingErrorOnUnknown` appends to `unknown field [x]`: empty, ` did you mean
/// [a]?`, or ` did you mean any of [a, b]?`.
pub fn field_suggestion(unknown: &[u16], candidates: &[&str]) -> String {
    suffix(" did you mean ", &ranked(unknown, candidates))
}

/// The suffix `BaseRestHandler` appends to an unrecognized parameter `[x]`: empty, ` -> did you
/// mean [a]?`, or ` -> did you mean any of [a, b]?`.
pub fn parameter_suggestion(unknown: &[u16], candidates: &[&str]) -> String {
    suffix(" -> did you mean ", &ranked(unknown, candidates))
}

fn suffix(lead: &str, keys: &[&str]) -> String {
    match keys {
        [] => String::new(),
        [one] => format!("{lead}[{one}]?"),
        many => format!("{lead}any of [{}]?", many.join(", ")),
    }
}

/// A string's UTF-16 units, the way Java holds it.
pub fn utf16(s: &str) -> Vec<u16> {
    s.encode_utf16().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sim(a: &str, b: &str) -> f32 {
        similarity(&utf16(a), &utf16(b))
    }

    #[test]
    fn similarity_is_lucenes_float() {
        // Row P7: `erro`, `Error`, `errors` are all suggested `error`.
        assert_eq!(sim("erro", "error"), 1.0f32 - 1.0f32 / 5.0f32);
        assert_eq!(sim("Error", "error"), 0.8f32);
        assert_eq!(sim("errors", "error"), 1.0f32 - 1.0f32 / 6.0f32);
        assert_eq!(sim("ERROR", "error"), 0.0);
        assert_eq!(sim("", ""), 1.0);
        assert_eq!(sim("", "error"), 0.0);
        assert_eq!(sim("error", ""), 0.0);
        // Exactly 0.5 is not a suggestion: the test is `> 0.5f`.
        assert_eq!(sim("abcd", "abef"), 0.5);
        assert!(ranked(&utf16("abcd"), &["abef"]).is_empty());
    }

    #[test]
    fn similarity_counts_utf16_units() {
        // One astral character is two units: two substitutions against "ab".
        assert_eq!(sim("😀", "ab"), 0.0);
        assert_eq!(sim("a😀", "a😁"), 1.0f32 - 1.0f32 / 3.0f32);
    }

    #[test]
    fn field_suggestions_read_like_elasticsearch() {
        assert_eq!(field_suggestion(&utf16("erro"), &["error"]), " did you mean [error]?");
        assert_eq!(field_suggestion(&utf16("foo"), &["error"]), "");
        assert_eq!(
            field_suggestion(&utf16("abc"), &["abe", "abd"]),
            " did you mean any of [abd, abe]?"
        );
    }

    #[test]
    fn ranked_by_similarity_then_name() {
        let candidates = super::super::params::CONSUMED;
        // 0.5714 for format, 0.5454 for filter_path.
        assert_eq!(ranked(&utf16("fo_path"), &candidates), ["format", "filter_path"]);
        // A tie (0.5454 each) is ordered by name.
        assert_eq!(ranked(&utf16("format_path"), &candidates), ["filter_path", "format"]);
        assert_eq!(
            parameter_suggestion(&utf16("prety"), &candidates),
            " -> did you mean [pretty]?"
        );
        assert_eq!(
            parameter_suggestion(&utf16("format_path"), &candidates),
            " -> did you mean any of [filter_path, format]?"
        );
    }
}
