//! Dialects: the Elasticsearch versions that answer the Update connector error API alike.
//!
//! Elasticsearch's answer on this route is a pure function of the request and three properties
//! of the node that answers it (`docs/dialects.md` gives the sources):
//!
//! * the REST compatibility window of its major: 8.x accepts `compatible-with` 7 and 8, 9.x
//!   accepts 8 and 9 ([`Major`]);
//! * how its `JsonXContentParser` wraps Jackson's exceptions ([`Wrapping`]): states B0 and B
//!   before elastic/elasticsearch#123439, state C after it;
//! * the jackson-core its x-content library bundles ([`Jackson`]): 2.17.x, 2.18.x or 2.21+.
//!
//! A [`Dialect`] is one combination that some release ships. [`DIALECTS`] is the one table of
//! them; every difference between dialects is read from it ([`Dialect::major`],
//! [`Dialect::wrapping`], [`Dialect::jackson`] and the rules these return), never from version
//! numbers scattered through the model. [`Knowledge::for_version`] maps a version to the
//! dialects it may speak: one when the version pins it, several when it does not (a patch release
//! whose backports are not established), and [`Knowledge::Unmodelled`] for versions before 8.16 or
//! after the 9.x line, in front of which esgate checks nothing.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// The major version whose REST compatibility window a node applies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Major {
    /// 8.x: `compatible-with` 8 (current) and 7.
    V8,
    /// 9.x: `compatible-with` 9 (current) and 8.
    V9,
}

impl Major {
    /// `RestApiVersion.current().major`.
    pub fn current(self) -> i8 {
        match self {
            Major::V8 => 8,
            Major::V9 => 9,
        }
    }

    /// `RestApiVersion.minimumSupported().major`.
    pub fn minimum(self) -> i8 {
        self.current() - 1
    }
}

/// How `JsonXContentParser` turns Jackson's exceptions into Elasticsearch's
/// (`docs/dialects.md`, "Wrapping").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Wrapping {
    /// 8.16 and 8.17 (elastic/elasticsearch#111548, #112579): as [`Wrapping::B`], but `text()`
    /// does not wrap at all, so a bad string value reaches the object parser as Jackson's own
    /// exception.
    B0,
    /// 8.18 to 9.0 and the early 8.19.x / 9.1.x releases (#114445 wraps `text()`): only
    /// `nextToken` turns an end of input into `Unexpected end of file`; `nextFieldName` and
    /// `text()` keep Jackson's text in an `x_content_parse_exception`; a `CharConversionException`
    /// and Jackson's number-length limit are not turned into a 400 at all.
    B,
    /// elastic/elasticsearch#123439 and later: one handler for every method.
    C,
}

/// The jackson-core family that x-content bundles (`docs/dialects.md`, "Jackson").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Jackson {
    /// 2.17.x: 8.16 to 9.4.3.
    V2_17,
    /// 2.18.x: 9.3.8, 9.4.4 and later 9.4.x, mid-2026 8.19.x.
    V2_18,
    /// 2.21 and later: 9.5.x and serverless.
    V2_21,
}

impl Jackson {
    /// The version the project's oracle runs for this family (`tests/oracle/README.md`).
    pub fn oracle_jar_version(self) -> &'static str {
        match self {
            Jackson::V2_17 => "2.17.2",
            Jackson::V2_18 => "2.18.4",
            Jackson::V2_21 => "2.22.4",
        }
    }
}

/// What differs between jackson-core families where the tokenizer meets it: the one place the
/// tokenizer asks (`docs/dialects.md`, "Jackson").
#[derive(Debug, PartialEq, Eq)]
pub struct JacksonRules {
    /// jackson-core#1180 (2.21): an unrecognized token is located at its first character, and a
    /// non-ASCII first byte of a value is decoded before it is judged. Before, the location is
    /// where reading stopped, and the byte itself is taken as a Latin-1 character.
    pub token_located_at_start: bool,
    /// jackson-core#363 (2.21): a UTF-8-encoded surrogate in a string or name is refused, and
    /// escaped surrogates in a name must make a pair. Before, both are read as they come.
    pub refuses_surrogates: bool,
    /// 2.21: a close marker at the root is "no open Object to close"; before, a mismatch with the
    /// root context, "expected ']' (for root starting at …)".
    pub root_close_marker_has_no_scope: bool,
    /// 2.19: an illegal Record Separator (U+001E) between tokens adds a hint naming
    /// `JsonReadFeature.ALLOW_RS_CONTROL_CHAR`.
    pub record_separator_hint: bool,
    /// 2.21: an unrecognized escape of a character outside the BMP shows its whole code point;
    /// before, the character is cut to 16 bits first (`(char) _decodeCharForError(c)`).
    pub escape_shows_code_point: bool,
}

const JACKSON_2_17: JacksonRules = JacksonRules {
    token_located_at_start: false,
    refuses_surrogates: false,
    root_close_marker_has_no_scope: false,
    record_separator_hint: false,
    escape_shows_code_point: false,
};

const JACKSON_2_21: JacksonRules = JacksonRules {
    token_located_at_start: true,
    refuses_surrogates: true,
    root_close_marker_has_no_scope: true,
    record_separator_hint: true,
    escape_shows_code_point: true,
};

impl Jackson {
    /// The family's rules. 2.18 reads bodies as 2.17 does, as far as the oracle shows.
    pub fn rules(self) -> &'static JacksonRules {
        match self {
            Jackson::V2_17 | Jackson::V2_18 => &JACKSON_2_17,
            Jackson::V2_21 => &JACKSON_2_21,
        }
    }
}

/// One way of answering the route: a combination of [`Major`], [`Wrapping`] and [`Jackson`] that
/// an Elasticsearch release ships. See [`DIALECTS`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Dialect {
    /// 8.16.x and 8.17.x.
    Es8B017,
    /// 8.18.x, 8.19.0 (and 8.19.x patches built before the #123439 backport).
    Es8B17,
    /// 8.19.x patches built after the #123439 backport, on jackson-core 2.17.
    Es8C17,
    /// 8.19.x patches of mid-2026, on jackson-core 2.18.
    Es8C18,
    /// 8.19.x patches that may carry the jackson-core 2.21 backport (not established).
    Es8C21,
    /// 9.0.x, 9.1.0 (and 9.1.x patches built before the #123439 backport).
    Es9B17,
    /// 9.1.x patches after the backport, 9.2.x, 9.3.0 to 9.3.3, 9.4.0 to 9.4.3.
    Es9C17,
    /// 9.3.8 and later 9.3.x, 9.4.4 and later 9.4.x.
    Es9C18,
    /// 9.5.x and later 9.x, serverless.
    Es9C21,
}

/// The one table of dialects: name, major, wrapping, Jackson family. Ordered as [`Dialect`].
pub const DIALECTS: [(Dialect, &str, Major, Wrapping, Jackson); 9] = [
    (Dialect::Es8B017, "8-b0-2.17", Major::V8, Wrapping::B0, Jackson::V2_17),
    (Dialect::Es8B17, "8-b-2.17", Major::V8, Wrapping::B, Jackson::V2_17),
    (Dialect::Es8C17, "8-c-2.17", Major::V8, Wrapping::C, Jackson::V2_17),
    (Dialect::Es8C18, "8-c-2.18", Major::V8, Wrapping::C, Jackson::V2_18),
    (Dialect::Es8C21, "8-c-2.21", Major::V8, Wrapping::C, Jackson::V2_21),
    (Dialect::Es9B17, "9-b-2.17", Major::V9, Wrapping::B, Jackson::V2_17),
    (Dialect::Es9C17, "9-c-2.17", Major::V9, Wrapping::C, Jackson::V2_17),
    (Dialect::Es9C18, "9-c-2.18", Major::V9, Wrapping::C, Jackson::V2_18),
    (Dialect::Es9C21, "9-c-2.21", Major::V9, Wrapping::C, Jackson::V2_21),
];

impl Dialect {
    /// Every modelled dialect.
    pub const ALL: [Dialect; 9] = [
        Dialect::Es8B017,
        Dialect::Es8B17,
        Dialect::Es8C17,
        Dialect::Es8C18,
        Dialect::Es8C21,
        Dialect::Es9B17,
        Dialect::Es9C17,
        Dialect::Es9C18,
        Dialect::Es9C21,
    ];

    /// The newest dialect: what a serverless project and the newest release speak.
    pub const NEWEST: Dialect = Dialect::Es9C21;

    fn row(self) -> &'static (Dialect, &'static str, Major, Wrapping, Jackson) {
        &DIALECTS[self as usize]
    }

    /// A short stable name, `<major>-<wrapping>-<jackson>`, e.g. `9-c-2.21` (logs, metrics, audit).
    pub fn name(self) -> &'static str {
        self.row().1
    }

    /// The major whose compatibility window applies.
    pub fn major(self) -> Major {
        self.row().2
    }

    /// How Jackson's exceptions are wrapped.
    pub fn wrapping(self) -> Wrapping {
        self.row().3
    }

    /// The jackson-core family.
    pub fn jackson(self) -> Jackson {
        self.row().4
    }

    /// The dialect named `name` (see [`Dialect::name`]).
    pub fn from_name(name: &str) -> Option<Dialect> {
        DIALECTS.iter().find(|row| row.1 == name).map(|row| row.0)
    }

    fn bit(self) -> u16 {
        1 << (self as u8)
    }
}

impl fmt::Display for Dialect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of dialects: those a node (or any of several nodes) may be speaking.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct DialectSet(u16);

impl DialectSet {
    /// No dialect.
    pub const EMPTY: DialectSet = DialectSet(0);
    /// Every modelled dialect: what esgate assumes of a node it knows nothing about.
    pub const ALL: DialectSet = DialectSet((1 << Dialect::ALL.len()) - 1);

    /// The set holding only `dialect`.
    pub const fn one(dialect: Dialect) -> DialectSet {
        DialectSet(1 << (dialect as u8))
    }

    /// The set of `dialects`.
    pub fn of(dialects: &[Dialect]) -> DialectSet {
        DialectSet(dialects.iter().fold(0, |bits, d| bits | d.bit()))
    }

    /// Every dialect of `major`.
    pub fn of_major(major: Major) -> DialectSet {
        DialectSet(
            Dialect::ALL
                .iter()
                .filter(|d| d.major() == major)
                .fold(0, |bits, d| bits | d.bit()),
        )
    }

    /// Both sets together.
    pub fn union(self, other: DialectSet) -> DialectSet {
        DialectSet(self.0 | other.0)
    }

    /// True when `dialect` is in the set.
    pub fn contains(self, dialect: Dialect) -> bool {
        self.0 & dialect.bit() != 0
    }

    /// True for the empty set.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The dialects of the set, in [`Dialect`] order.
    pub fn iter(self) -> impl Iterator<Item = Dialect> {
        Dialect::ALL.into_iter().filter(move |d| self.contains(*d))
    }

    /// The only dialect of a one-element set.
    pub fn single(self) -> Option<Dialect> {
        (self.0.count_ones() == 1).then(|| self.iter().next()).flatten()
    }
}

impl fmt::Debug for DialectSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Dialect::name)).finish()
    }
}

/// The names of the set, joined with `,` (`9-c-2.17,9-c-2.18`); `none` when empty.
impl fmt::Display for DialectSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for d in self.iter() {
            if !first {
                f.write_str(",")?;
            }
            first = false;
            f.write_str(d.name())?;
        }
        if first {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// An Elasticsearch version, `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Version {
    /// The major.
    pub major: u8,
    /// The minor.
    pub minor: u8,
    /// The patch release.
    pub patch: u16,
}

impl Version {
    /// `major.minor.patch`.
    pub const fn new(major: u8, minor: u8, patch: u16) -> Version {
        Version { major, minor, patch }
    }

    /// Parses `version.number` as `GET /` reports it: `9.2.1`, `8.19.0-SNAPSHOT`, `9.1`.
    pub fn parse(text: &str) -> Option<Version> {
        let core = text.trim().split(['-', '+']).next()?;
        let mut parts = core.split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = parts.next()?.parse().ok()?;
        let patch = match parts.next() {
            Some(p) => p.parse().ok()?,
            None => 0,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(Version { major, minor, patch })
    }

    fn pack(self) -> u64 {
        u64::from(self.major) << 24 | u64::from(self.minor) << 16 | u64::from(self.patch)
    }

    fn unpack(bits: u64) -> Version {
        Version {
            major: (bits >> 24) as u8,
            minor: (bits >> 16) as u8,
            patch: bits as u16,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// The first modelled version: 8.16.0. Before it, wrapping A and another body path.
pub const FIRST_MODELLED: Version = Version::new(8, 16, 0);

/// What esgate knows of the dialect of a node, or of every node a call may go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Knowledge {
    /// The node speaks one of these (never empty).
    Dialects(DialectSet),
    /// The node runs a version esgate does not model: check nothing, forward every call.
    Unmodelled(Version),
}

impl Knowledge {
    /// Nothing is known: every modelled dialect (esgate assumes a supported release).
    pub const UNKNOWN: Knowledge = Knowledge::Dialects(DialectSet::ALL);

    /// Only the major is known (from the compatibility check): every dialect of it; a major
    /// outside 8 and 9 is unmodelled.
    pub fn for_major(major: u8) -> Knowledge {
        match major {
            8 => Knowledge::Dialects(DialectSet::of_major(Major::V8)),
            9 => Knowledge::Dialects(DialectSet::of_major(Major::V9)),
            _ => Knowledge::Unmodelled(Version::new(major, 0, 0)),
        }
    }

    /// The dialects `version` may speak (`docs/dialects.md`, "Versions"). Where a patch release's
    /// backports are not established, every dialect it may have is in the set.
    pub fn for_version(version: Version) -> Knowledge {
        use Dialect::*;
        let Version { major, minor, patch } = version;
        let set = match (major, minor) {
            (8, 0..=15) | (0..=7, _) => return Knowledge::Unmodelled(version),
            (8, 16..=17) => DialectSet::one(Es8B017),
            (8, 18) => DialectSet::one(Es8B17),
            (8, 19) if patch == 0 => DialectSet::one(Es8B17),
            // Which 8.19.x patch first had the #123439 backport (2025-08-06), the jackson-core
            // 2.18 upgrade (2026-07) and the 2.21.6 bump (2026-09) is not established.
            (8, 19) => DialectSet::of(&[Es8B17, Es8C17, Es8C18, Es8C21]),
            (8, _) => return Knowledge::Unmodelled(version),
            (9, 0) => DialectSet::one(Es9B17),
            (9, 1) if patch == 0 => DialectSet::one(Es9B17),
            (9, 1) => DialectSet::of(&[Es9B17, Es9C17]),
            (9, 2) => DialectSet::one(Es9C17),
            (9, 3) if patch <= 3 => DialectSet::one(Es9C17),
            (9, 3) if patch <= 7 => DialectSet::of(&[Es9C17, Es9C18]),
            (9, 3) => DialectSet::one(Es9C18),
            (9, 4) if patch <= 3 => DialectSet::one(Es9C17),
            // The jackson-core 2.21.6 bump was backported to 9.4 (2026-09); whether it reached
            // x-content there is not established.
            (9, 4) => DialectSet::of(&[Es9C18, Es9C21]),
            (9, _) => DialectSet::one(Es9C21),
            _ => return Knowledge::Unmodelled(version),
        };
        Knowledge::Dialects(set)
    }

    /// What holds for a call that may go to a node of either knowledge: the union of the sets;
    /// unmodelled when either is.
    pub fn union(self, other: Knowledge) -> Knowledge {
        match (self, other) {
            (Knowledge::Unmodelled(v), _) | (_, Knowledge::Unmodelled(v)) => Knowledge::Unmodelled(v),
            (Knowledge::Dialects(a), Knowledge::Dialects(b)) => Knowledge::Dialects(a.union(b)),
        }
    }

    fn pack(self) -> u64 {
        match self {
            Knowledge::Dialects(set) => u64::from(set.0),
            Knowledge::Unmodelled(v) => 1 << 63 | v.pack(),
        }
    }

    fn unpack(bits: u64) -> Knowledge {
        if bits >> 63 == 1 {
            Knowledge::Unmodelled(Version::unpack(bits))
        } else {
            Knowledge::Dialects(DialectSet(bits as u16))
        }
    }
}

impl fmt::Display for Knowledge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Knowledge::Dialects(set) => set.fmt(f),
            Knowledge::Unmodelled(v) => write!(f, "unmodelled {v}"),
        }
    }
}

/// [`Knowledge`] shared between whoever learns it (the upstream's version probes) and the layer
/// that reads it on every intercepted call: one atomic word, so the request path takes no lock.
#[derive(Clone, Debug)]
pub struct SharedKnowledge(Arc<AtomicU64>);

impl SharedKnowledge {
    /// Holding `knowledge`.
    pub fn new(knowledge: Knowledge) -> Self {
        SharedKnowledge(Arc::new(AtomicU64::new(knowledge.pack())))
    }

    /// Pinned to one version, as `connector_error.es_version` does.
    pub fn pinned(version: Version) -> Self {
        SharedKnowledge::new(Knowledge::for_version(version))
    }

    /// What is known now.
    pub fn load(&self) -> Knowledge {
        Knowledge::unpack(self.0.load(Ordering::Relaxed))
    }

    /// Replaces what is known.
    pub fn store(&self, knowledge: Knowledge) {
        self.0.store(knowledge.pack(), Ordering::Relaxed);
    }
}

impl Default for SharedKnowledge {
    fn default() -> Self {
        SharedKnowledge::new(Knowledge::UNKNOWN)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_in_enum_order_and_names_are_unique() {
        for (i, row) in DIALECTS.iter().enumerate() {
            assert_eq!(row.0 as usize, i);
            assert_eq!(Dialect::from_name(row.1), Some(row.0));
        }
    }

    #[test]
    fn versions_map_to_their_dialects() {
        let v = |s: &str| Knowledge::for_version(Version::parse(s).expect("version"));
        let one = |d| Knowledge::Dialects(DialectSet::one(d));
        assert_eq!(v("8.15.3"), Knowledge::Unmodelled(Version::new(8, 15, 3)));
        assert_eq!(v("7.17.0"), Knowledge::Unmodelled(Version::new(7, 17, 0)));
        assert_eq!(v("10.0.0"), Knowledge::Unmodelled(Version::new(10, 0, 0)));
        assert_eq!(v("8.16.0"), one(Dialect::Es8B017));
        assert_eq!(v("8.17.9"), one(Dialect::Es8B017));
        assert_eq!(v("8.18.8"), one(Dialect::Es8B17));
        assert_eq!(v("9.0.8"), one(Dialect::Es9B17));
        assert_eq!(v("9.2.4"), one(Dialect::Es9C17));
        assert_eq!(v("9.3.8"), one(Dialect::Es9C18));
        assert_eq!(v("9.4.2"), one(Dialect::Es9C17));
        assert_eq!(v("9.5.4"), one(Dialect::Es9C21));
        assert_eq!(v("9.6.0-SNAPSHOT"), one(Dialect::Es9C21));
        let Knowledge::Dialects(set) = v("9.3.5") else {
            panic!("modelled")
        };
        assert_eq!(set.to_string(), "9-c-2.17,9-c-2.18");
        let Knowledge::Dialects(set) = v("8.19.4") else {
            panic!("modelled")
        };
        assert_eq!(set.to_string(), "8-b-2.17,8-c-2.17,8-c-2.18,8-c-2.21");
    }

    #[test]
    fn knowledge_survives_the_atomic_word() {
        for k in [
            Knowledge::UNKNOWN,
            Knowledge::for_major(8),
            Knowledge::Dialects(DialectSet::one(Dialect::Es9C21)),
            Knowledge::Unmodelled(Version::new(8, 15, 65535)),
        ] {
            let shared = SharedKnowledge::new(k);
            assert_eq!(shared.load(), k);
        }
        assert_eq!(Knowledge::for_major(7), Knowledge::Unmodelled(Version::new(7, 0, 0)));
    }

    #[test]
    fn a_union_is_unmodelled_when_one_side_is() {
        let a = Knowledge::for_version(Version::new(9, 2, 0));
        let b = Knowledge::for_version(Version::new(9, 5, 0));
        assert_eq!(a.union(b).to_string(), "9-c-2.17,9-c-2.21");
        let old = Knowledge::for_version(Version::new(8, 14, 0));
        assert_eq!(a.union(old), old);
    }
}
