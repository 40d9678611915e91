//! The deterministic body generator of the live test: the cases of `cases.txt` and handcrafted
//! seeds as they are, then documents shaped like connector-error requests and mutated seeds, all
//! from one seed (splitmix64), so a seed names the same bodies everywhere.

use crate::oracle_io::read_cases;

/// splitmix64: small, fast, and the same sequence everywhere for one seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn range(&mut self, lo: usize, hi_inclusive: usize) -> usize {
        lo + self.below(hi_inclusive - lo + 1)
    }

    fn percent(&mut self, p: usize) -> bool {
        self.below(100) < p
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Numbers, literals and other values to put where a value goes.
fn replacement_values() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        // numbers, valid and not
        "-",
        "01",
        "1.",
        "1e",
        ".5",
        "+1",
        "NaN",
        "Infinity",
        "-Infinity",
        "+Infinity",
        "nan",
        "1e+",
        "1e-",
        "-0",
        "0",
        "1.5",
        "-3",
        "1E400",
        "0x10",
        "1_000",
        "00",
        "-01",
        "1.e1",
        "--1",
        "0.0e0",
        "1e5",
        "-1.5E-7",
        "2.",
        "-.5",
        "123456789012345678901234567890", // literals, valid and not
        "tru",
        "nul",
        "falsey",
        "true",
        "false",
        "null",
        "nulll",
        "t",
        "n",
        "f",
        "True",
        "NULL",
        "undefined",
        "truex",
        "null1",
        "fals", // other values
        "{}",
        "[]",
        "[",
        "{",
        "[1,2]",
        "{\"a\":1}",
        "[[[[",
        "{\"a\"",
        "\"\"",
        "\"x\"",
        "\"",
        "'x'",
        "\"\\u12\"",
        "\"\\q\"",
        "\"a\\\"b\"",
        "\"\\uD800\"",
        "\"\\uDC00\\uD800\"",
        "\"\\ud83d\\ude00\"",
        "",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    let digits = |n: usize| "1".repeat(n);
    v.push(digits(1000).into_bytes());
    v.push(digits(1001).into_bytes());
    v.push(format!("-{}", digits(1000)).into_bytes());
    v.push(format!("-{}", digits(999)).into_bytes());
    v.push(format!("0.{}", digits(1000)).into_bytes());
    v.push(format!("1e{}", digits(1000)).into_bytes());
    v.push(format!("{}.5", digits(999)).into_bytes());
    v
}

/// Field names to put where a name goes (already quoted, or not).
const KEYS: &[&str] = &[
    "\"error\"",
    "\"error\"",
    "\"error\"",
    "\"erro\"",
    "\"Error\"",
    "\"errors\"",
    "\"ERROR\"",
    "\"foo\"",
    "\"\"",
    "\"\u{e9}\"",
    "\"\u{1F600}\"",
    "\"err\\u006fr\"",
    "\"error \"",
    "\"e\"",
    "\"\\ud800\"",
    "\"er\\\"ror\"",
    "\"eror\"",
    "\"rror\"",
    "error",
    "'error'",
    "\"error",
];

const COMMENTS: &[&str] = &[
    "/**/",
    "/* c */",
    "/* \u{e9} */",
    "// c\n",
    "//\n",
    "//\r\n",
    "// c\r",
    "/*",
    "/* open",
    "//",
    "/",
    "/*/",
    "*/",
    "/* * */",
    "/*/*/",
    "/* // */",
    "# hash\n",
    "/**/ /**/",
    "/*\n*/",
    "/*\r\n*/",
];

const LAYOUT: &[&str] = &[
    " ", "\n", "\r\n", "\t", "\r", "  ", "/* c */", "/**/", "// c\n", "\n\n", " \t ", "//\r",
];

const WHITESPACE_AND_CONTROL: &[&[u8]] = &[
    b" ", b"\r", b"\n", b"\r\n", b"\t", b"\n\r", b"\x00", b"\x01", b"\x08", b"\x0b", b"\x0c", b"\x1b", b"\x1f",
    b"\x7f", b"   ", b"\r\r",
];

/// Unicode and invalid UTF-8.
const UNICODE: &[&[u8]] = &[
    "\u{e9}".as_bytes(),
    "\u{80}".as_bytes(),
    "\u{7ff}".as_bytes(),
    "\u{20ac}".as_bytes(),
    "\u{4e2d}".as_bytes(),
    "\u{800}".as_bytes(),
    "\u{feff}".as_bytes(),
    "\u{ffff}".as_bytes(),
    "\u{1F600}".as_bytes(),
    "\u{10ffff}".as_bytes(),
    "\u{10000}".as_bytes(),
    b"\x80",
    b"\xbf",
    b"\xc0\x80",
    b"\xc1\xbf",
    b"\xc3",
    b"\xc3\x28",
    b"\xe2\x82",
    b"\xe2\x28\xa1",
    b"\xe0\x80\x80",
    b"\xf0\x9f\x98",
    b"\xf0\x28\x8c\x28",
    b"\xf4\x90\x80\x80",
    b"\xf5\x80\x80\x80",
    b"\xf8\x88\x80\x80\x80",
    b"\xfe",
    b"\xff",
    b"\xed\xa0\x80",
    b"\xed\xbf\xbf",
    b"\xed\xb0\x80",
    b"\xed\xa0\xbd\xed\xb8\x80",
];

/// Contents of generated strings (between the quotes).
fn string_pieces() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "abc",
        " ",
        "Houston, we have a problem!",
        "x",
        "\\\"",
        "\\\\",
        "\\/",
        "\\b",
        "\\f",
        "\\n",
        "\\r",
        "\\t",
        "\\u0000",
        "\\u001F",
        "\\u007f",
        "\\u00E9",
        "\\u20ac",
        "\\uD83D\\uDE00",
        "\\ud800",
        "\\uDFFF",
        "\\uDC00\\uD800",
        "\\uFFFE",
        "'",
        "/* not a comment */",
        "// neither",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.extend(UNICODE[..11].iter().map(|u| u.to_vec()));
    v
}

/// Long string contents, around the 500-byte cut of Jackson's snippet.
fn long_piece(rng: &mut Rng) -> Vec<u8> {
    match rng.below(7) {
        0 => "a".repeat(rng.range(600, 1200)).into_bytes(),
        1 => "\u{e9}".repeat(rng.range(300, 500)).into_bytes(),
        2 => "\u{20ac}".repeat(rng.range(200, 350)).into_bytes(),
        3 => "\u{1F600}".repeat(rng.range(150, 250)).into_bytes(),
        4 => format!("{}\u{e9}{}", "a".repeat(rng.range(485, 492)), "b".repeat(100)).into_bytes(),
        5 => format!("{}\u{1F600}{}", "a".repeat(rng.range(484, 492)), "b".repeat(100)).into_bytes(),
        _ => "\\n".repeat(rng.range(300, 400)).into_bytes(),
    }
}

pub(crate) struct Generator {
    rng: Rng,
    seeds: Vec<(String, Vec<u8>)>,
    values: Vec<Vec<u8>>,
    pieces: Vec<Vec<u8>>,
}

impl Generator {
    pub(crate) fn new(seed: u64) -> Self {
        let mut seeds = Vec::new();
        for (label, body) in read_cases() {
            seeds.push((format!("cases.txt: {label}"), body));
        }
        seeds.extend(handcrafted());
        Generator {
            rng: Rng(seed),
            seeds,
            values: replacement_values(),
            pieces: string_pieces(),
        }
    }

    /// `count` labelled bodies: every seed as it is, then documents and mutated seeds.
    pub(crate) fn bodies(&mut self, count: usize) -> Vec<(String, Vec<u8>)> {
        let mut out: Vec<(String, Vec<u8>)> = self.seeds.iter().take(count).cloned().collect();
        while out.len() < count {
            let n = out.len();
            let (mut label, mut body, mutations) = if self.rng.percent(50) {
                let doc = self.document();
                let mutations = if self.rng.percent(50) { 0 } else { self.mutation_count() };
                (format!("#{n} generated document"), doc, mutations)
            } else {
                let (label, body) = self.rng.pick(&self.seeds).clone();
                (format!("#{n} {label}"), body, self.mutation_count())
            };
            for _ in 0..mutations {
                let name = self.mutate(&mut body);
                label.push_str(" + ");
                label.push_str(name);
            }
            out.push((label, body));
        }
        out
    }

    fn mutation_count(&mut self) -> usize {
        match self.rng.below(10) {
            0..=4 => 1,
            5..=7 => 2,
            _ => self.rng.range(3, 5),
        }
    }

    // ----- structured documents -----

    fn layout(&mut self, out: &mut Vec<u8>) {
        if self.rng.percent(55) {
            return;
        }
        for _ in 0..self.rng.range(1, 3) {
            out.extend_from_slice(self.rng.pick(LAYOUT).as_bytes());
        }
    }

    fn string(&mut self, out: &mut Vec<u8>) {
        out.push(b'"');
        if self.rng.percent(6) {
            out.extend(long_piece(&mut self.rng));
        } else {
            for _ in 0..self.rng.range(0, 6) {
                let piece = self.rng.pick(&self.pieces).clone();
                out.extend(piece);
            }
        }
        out.push(b'"');
    }

    /// A body shaped like a connector-error request: mostly valid, sometimes with other fields,
    /// other values, several members, a BOM or bytes after the object.
    fn document(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if self.rng.percent(5) {
            out.extend_from_slice(b"\xef\xbb\xbf");
        }
        self.layout(&mut out);
        out.push(b'{');
        let members = match self.rng.below(100) {
            0..=7 => 0,
            8..=77 => 1,
            78..=92 => 2,
            _ => 3,
        };
        for i in 0..members {
            if i > 0 {
                self.layout(&mut out);
                out.push(b',');
            }
            self.layout(&mut out);
            if self.rng.percent(85) {
                out.extend_from_slice(b"\"error\"");
            } else {
                out.extend_from_slice(self.rng.pick(KEYS).as_bytes());
            }
            self.layout(&mut out);
            out.push(b':');
            self.layout(&mut out);
            match self.rng.below(100) {
                0..=64 => self.string(&mut out),
                65..=79 => out.extend_from_slice(b"null"),
                80..=89 => out.extend_from_slice(
                    self.rng
                        .pick(&[
                            "1",
                            "-2.5e3",
                            "true",
                            "false",
                            "{}",
                            "[\"a\"]",
                            "{\"a\":[1,{\"b\":null}]}",
                            "[[[]]]",
                        ])
                        .as_bytes(),
                ),
                _ => out.extend(self.rng.pick(&self.values).clone()),
            }
        }
        self.layout(&mut out);
        out.push(b'}');
        if self.rng.percent(15) {
            let trailing: &[&[u8]] = &[
                b" ",
                b"\n",
                b"}",
                b",",
                b"{\"a\":1}",
                b"trailing garbage",
                b"\xff\xfe",
                b"/*",
                b"//",
            ];
            let tail = *self.rng.pick::<&[u8]>(trailing);
            out.extend_from_slice(tail);
        }
        out
    }

    // ----- mutations -----

    /// Applies one mutation to `body` and returns its name.
    fn mutate(&mut self, body: &mut Vec<u8>) -> &'static str {
        let shape = Shape::of(body);
        match self.rng.below(120) {
            0..=13 => self.truncate(body, &shape),
            14..=21 => {
                for _ in 0..self.rng.range(1, 3) {
                    if !body.is_empty() {
                        let i = self.rng.below(body.len());
                        body[i] ^= 1 << self.rng.below(8);
                    }
                }
                "bit flips"
            }
            22..=27 => {
                if !body.is_empty() {
                    let i = self.rng.below(body.len());
                    body[i] = *self.rng.pick(b"{}[]:,\"'\\/*\n\r\t \x00\x7fen1-.eE+\xc3\xed\xff");
                }
                "byte replaced"
            }
            28..=33 => {
                let at = self.rng.range(0, body.len());
                let byte = if self.rng.percent(50) {
                    self.rng.next() as u8
                } else {
                    *self.rng.pick(b"{}[]:,\"\\/*\n")
                };
                body.insert(at, byte);
                "byte inserted"
            }
            34..=39 => {
                if !body.is_empty() {
                    let at = self.rng.below(body.len());
                    let n = self.rng.range(1, 3).min(body.len() - at);
                    body.drain(at..at + n);
                }
                "bytes deleted"
            }
            40..=49 => {
                let at = self.boundary(body, &shape);
                let comment = self.rng.pick(COMMENTS).as_bytes();
                splice_in(body, at, comment);
                "comment inserted"
            }
            50..=57 => {
                let at = if self.rng.percent(60) {
                    self.boundary(body, &shape)
                } else {
                    self.rng.range(0, body.len())
                };
                let ws = *self.rng.pick(WHITESPACE_AND_CONTROL);
                splice_in(body, at, ws);
                "whitespace/control inserted"
            }
            58..=67 => {
                let at = match self.inside_string(&shape) {
                    Some(at) if self.rng.percent(60) => at,
                    _ => self.rng.range(0, body.len()),
                };
                let u = *self.rng.pick(UNICODE);
                splice_in(body, at, u);
                "unicode inserted"
            }
            68..=73 => {
                let long = long_piece(&mut self.rng);
                match self.inside_string(&shape) {
                    Some(at) if self.rng.percent(70) => splice_in(body, at, &long),
                    _ => {
                        let at = self.boundary(body, &shape);
                        let spaces = vec![b' '; self.rng.range(490, 700)];
                        splice_in(body, at, &spaces);
                    }
                }
                "long run inserted"
            }
            74..=77 => {
                let quotes: Vec<usize> = (0..body.len())
                    .filter(|&i| body[i] == b'"' || body[i] == b'\'')
                    .collect();
                if self.rng.percent(25) {
                    for &i in &quotes {
                        body[i] = if body[i] == b'"' { b'\'' } else { b'"' };
                    }
                    "all quotes swapped"
                } else {
                    if !quotes.is_empty() {
                        let i = *self.rng.pick(&quotes);
                        body[i] = if body[i] == b'"' { b'\'' } else { b'"' };
                    }
                    "one quote swapped"
                }
            }
            78..=83 => {
                let targets: Vec<usize> = shape.colons.iter().chain(&shape.commas).copied().collect();
                if !targets.is_empty() {
                    let i = *self.rng.pick(&targets);
                    match self.rng.below(4) {
                        0 => body[i] = if body[i] == b':' { b'=' } else { b';' },
                        _ => {
                            body.remove(i);
                        }
                    }
                }
                "comma/colon removed"
            }
            84..=91 => {
                let members: &[&[u8]] = &[
                    b"\"error\":\"dup\"",
                    b"\"error\":null",
                    b"\"error\":1",
                    b"\"foo\":1",
                    b"\"Error\":\"x\"",
                    b"\"erro\":[1]",
                    b"\"error\" : \"again\"",
                ];
                let member = *self.rng.pick(members);
                match (shape.open_braces.first(), shape.close_braces.last()) {
                    (Some(&open), _) if self.rng.percent(50) => splice_in(body, open + 1, &[member, b","].concat()),
                    (_, Some(&close)) => splice_in(body, close, &[b",", member].concat()),
                    _ => body.extend_from_slice(member),
                }
                "field added"
            }
            92..=105 => {
                let value = self.rng.pick(&self.values).clone();
                let spans = shape.value_spans(body);
                if spans.is_empty() {
                    splice_in(body, self.rng.range(0, body.len()), &value);
                } else {
                    let (start, end) = *self.rng.pick(&spans);
                    body.splice(start..end, value);
                }
                "value replaced"
            }
            106..=110 => {
                let key = self.rng.pick(KEYS).as_bytes();
                let keys = shape.key_spans(body);
                if !keys.is_empty() {
                    let (start, end) = *self.rng.pick(&keys);
                    body.splice(start..end, key.iter().copied());
                }
                "key replaced"
            }
            111..=115 => {
                let (_, other) = self.rng.pick(&self.seeds).clone();
                let cut = self.rng.range(0, body.len());
                let from = self.rng.range(0, other.len());
                body.truncate(cut);
                body.extend_from_slice(&other[from..]);
                "spliced with another seed"
            }
            _ => {
                let at = self.rng.range(0, body.len());
                let len = self.rng.range(1, 16).min(body.len() - at);
                let chunk = body[at..at + len].to_vec();
                splice_in(body, at, &chunk);
                "chunk duplicated"
            }
        }
    }

    /// Cuts the body at a position of some kind: anywhere, after a structural byte, inside a
    /// string, inside an escape, inside a multi-byte character, inside a comment, near the end.
    fn truncate(&mut self, body: &mut Vec<u8>, shape: &Shape) -> &'static str {
        let positions = |pred: &dyn Fn(usize) -> bool| -> Vec<usize> { (0..body.len()).filter(|&i| pred(i)).collect() };
        let (name, candidates): (&'static str, Vec<usize>) = match self.rng.below(7) {
            0 => ("truncated anywhere", Vec::new()),
            1 => (
                "truncated after a structural byte",
                positions(&|i| b"{:,[".contains(&body[i]))
                    .iter()
                    .map(|i| i + 1)
                    .collect(),
            ),
            2 => ("truncated inside a string", self.inside_strings(shape)),
            3 => (
                "truncated inside an escape",
                positions(&|i| body[i] == b'\\')
                    .iter()
                    .map(|i| i + 1 + self.rng.below(4))
                    .collect(),
            ),
            4 => (
                "truncated inside a UTF-8 character",
                positions(&|i| body[i] >= 0xc0).iter().map(|i| i + 1).collect(),
            ),
            5 => (
                "truncated inside a comment",
                positions(&|i| body[i] == b'/' || body[i] == b'*')
                    .iter()
                    .map(|i| i + 1)
                    .collect(),
            ),
            _ => (
                "truncated near the end",
                (body.len().saturating_sub(3)..body.len()).collect(),
            ),
        };
        let candidates: Vec<usize> = candidates.into_iter().filter(|&i| i <= body.len()).collect();
        let at = if candidates.is_empty() {
            self.rng.range(0, body.len())
        } else {
            *self.rng.pick(&candidates)
        };
        body.truncate(at);
        name
    }

    /// A position next to a structural byte (where layout goes), or anywhere.
    fn boundary(&mut self, body: &[u8], shape: &Shape) -> usize {
        let mut b: Vec<usize> = shape.structural.iter().flat_map(|&i| [i, i + 1]).collect();
        b.push(0);
        b.push(body.len());
        *self.rng.pick(&b)
    }

    fn inside_strings(&mut self, shape: &Shape) -> Vec<usize> {
        shape
            .strings
            .iter()
            .filter(|(s, e)| e > s)
            .map(|&(s, e)| s + 1 + self.rng.below(e - s))
            .collect()
    }

    fn inside_string(&mut self, shape: &Shape) -> Option<usize> {
        let inside = self.inside_strings(shape);
        if inside.is_empty() {
            None
        } else {
            Some(*self.rng.pick(&inside))
        }
    }
}

fn splice_in(body: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let at = at.min(body.len());
    body.splice(at..at, bytes.iter().copied());
}

/// Where the strings and structural bytes of a (possibly broken) body are, by a quick scan that
/// knows strings and escapes but not comments.
struct Shape {
    /// `(opening quote, closing quote or end)` of every string.
    strings: Vec<(usize, usize)>,
    structural: Vec<usize>,
    colons: Vec<usize>,
    commas: Vec<usize>,
    open_braces: Vec<usize>,
    close_braces: Vec<usize>,
}

impl Shape {
    fn of(body: &[u8]) -> Shape {
        let mut s = Shape {
            strings: Vec::new(),
            structural: Vec::new(),
            colons: Vec::new(),
            commas: Vec::new(),
            open_braces: Vec::new(),
            close_braces: Vec::new(),
        };
        let mut i = 0;
        while i < body.len() {
            match body[i] {
                b'"' => {
                    let start = i;
                    i += 1;
                    while i < body.len() && body[i] != b'"' {
                        i += if body[i] == b'\\' { 2 } else { 1 };
                    }
                    s.strings.push((start, i.min(body.len())));
                }
                c @ (b'{' | b'}' | b'[' | b']' | b':' | b',') => {
                    s.structural.push(i);
                    match c {
                        b':' => s.colons.push(i),
                        b',' => s.commas.push(i),
                        b'{' => s.open_braces.push(i),
                        b'}' => s.close_braces.push(i),
                        _ => {}
                    }
                }
                _ => {}
            }
            i += 1;
        }
        s
    }

    /// `start..end` of the value after each colon.
    fn value_spans(&self, body: &[u8]) -> Vec<(usize, usize)> {
        let mut spans = Vec::new();
        for &colon in &self.colons {
            let mut start = colon + 1;
            while start < body.len() && b" \t\r\n".contains(&body[start]) {
                start += 1;
            }
            let end = if let Some(&(_, close)) = self.strings.iter().find(|(open, _)| *open == start) {
                (close + 1).min(body.len())
            } else {
                let mut end = start;
                while end < body.len() && !b",}] \t\r\n/".contains(&body[end]) {
                    end += 1;
                }
                end
            };
            spans.push((start, end));
        }
        spans
    }

    /// `start..end` of each string followed by a colon (a field name), quotes included.
    fn key_spans(&self, body: &[u8]) -> Vec<(usize, usize)> {
        self.strings
            .iter()
            .filter(|&&(_, close)| {
                body.get(close + 1..)
                    .and_then(|rest| rest.iter().find(|b| !b" \t\r\n".contains(b)))
                    .is_some_and(|b| *b == b':')
            })
            .map(|&(open, close)| (open, (close + 1).min(body.len())))
            .collect()
    }
}

/// Seeds beyond `cases.txt`: valid bodies of many shapes, and near misses.
fn handcrafted() -> Vec<(String, Vec<u8>)> {
    let mut v: Vec<(&str, Vec<u8>)> = Vec::new();
    let mut add = |name: &'static str, body: &[u8]| v.push((name, body.to_vec()));
    add("plain", br#"{"error":"x"}"#);
    add("null", br#"{"error":null}"#);
    add("empty string", br#"{"error":""}"#);
    add("README example", br#"{"error":"Houston, we have a problem!"}"#);
    add(
        "long ASCII 600",
        format!(r#"{{"error":"{}"}}"#, "a".repeat(600)).as_bytes(),
    );
    add(
        "long ASCII 1500",
        format!(r#"{{"error":"{}"}}"#, "abcdefghij".repeat(150)).as_bytes(),
    );
    add(
        "long 2-byte 800",
        format!(r#"{{"error":"{}"}}"#, "\u{e9}".repeat(400)).as_bytes(),
    );
    add(
        "long 3-byte",
        format!(r#"{{"error":"{}"}}"#, "\u{20ac}".repeat(300)).as_bytes(),
    );
    add(
        "long 4-byte",
        format!(r#"{{"error":"{}"}}"#, "\u{1F680}".repeat(200)).as_bytes(),
    );
    add(
        "2-byte char across the 500-byte cut",
        format!(r#"{{"error":"{}{}"}}"#, "a".repeat(489), "\u{e9}".repeat(60)).as_bytes(),
    );
    add(
        "4-byte char across the 500-byte cut",
        format!(r#"{{"error":"{}{}"}}"#, "a".repeat(488), "\u{1F600}".repeat(40)).as_bytes(),
    );
    add(
        "unicode",
        "{\"error\":\"h\u{e9}llo w\u{f6}rld \u{2713} \u{1F600} \u{4e2d}\u{6587} \u{10ffff}\"}".as_bytes(),
    );
    add(
        "every escape",
        br#"{"error":"\" \\ \/ \b \f \n \r \t \u0000 \u001f \u007F \u00e9 \u20AC \uD83D\uDE00 \uFFFF \uFEFF"}"#,
    );
    add(
        "lone surrogate escapes",
        br#"{"error":"\uD800 \uDBFF \uDC00 \uDFFF \uDC00\uD800 \ud83d"}"#,
    );
    add("escaped field name", br#"{"\u0065rror":"x"}"#);
    add("escaped quote in field name", br#"{"err\"or":"x"}"#);
    add(
        "comments everywhere",
        b"/*a*/{/*b*/\"error\"/*c*/:/*d*/\"x\"/*e*/}/*f*/",
    );
    add(
        "line comments everywhere",
        b"//a\n{//b\n\"error\"//c\n://d\n\"x\"//e\n}//f",
    );
    add(
        "tricky comments",
        b"/* ** / */{/*/ */\"error\":/***/\"x\"/* \"error\":1 */}",
    );
    add("comment with CR", b"{// c\r\"error\":\"x\"}");
    add("unterminated comment after value", b"{\"error\":\"x\"/* open");
    add("line comment to end", b"{\"error\":\"x\"// no newline");
    add("BOM", b"\xef\xbb\xbf{\"error\":\"x\"}");
    add("BOM then comment", b"\xef\xbb\xbf/* c */{\"error\":null}");
    add("double BOM", b"\xef\xbb\xbf\xef\xbb\xbf{\"error\":\"x\"}");
    add("BOM only", b"\xef\xbb\xbf");
    add("BOM in the middle", b"{\xef\xbb\xbf\"error\":\"x\"}");
    add("CR LF TAB layout", b"\r\n{\r\n\t\"error\"\t:\r\n\t\"x\"\r\n}\r\n");
    add("CR only lines", b"{\r\"error\":\r1}");
    add("CR LF lines, error on line 3", b"{\r\n\r\n\"error\":1}");
    add("LF CR", b"{\n\r\"error\":1}");
    add("CR CR LF", b"{\r\r\n\"error\":true}");
    add("many lines then unknown field", b"{\n\n\n\n\n\n\n\n\n\n\"foo\":1}");
    add("tabs before unknown field", b"{\t\t\t\"foo\":1}");
    add("nested object value", br#"{"error":{"a":[1,{"b":null}]}}"#);
    add("nested arrays value", br#"{"error":[[[]]]}"#);
    let (digits_1000, digits_1001) = ("7".repeat(1000), "7".repeat(1001));
    for (name, n) in [
        ("number 0", "0"),
        ("number -0", "-0"),
        ("number 1.5", "1.5"),
        ("number -1.5e10", "-1.5e10"),
        ("number 1E+2", "1E+2"),
        ("number 1e-2", "1e-2"),
        ("big integer", "123456789012345678901234567890"),
        ("number 1e400", "1e400"),
        ("number 0.0", "0.0"),
        ("1000 digits", digits_1000.as_str()),
        ("1001 digits", digits_1001.as_str()),
        ("true", "true"),
        ("false", "false"),
    ] {
        v.push((name, format!(r#"{{"error":{n}}}"#).into_bytes()));
    }
    let mut add = |name: &'static str, body: &[u8]| v.push((name, body.to_vec()));
    add("two fields", br#"{"error":"x","foo":1}"#);
    add("unknown field first", br#"{"foo":1,"error":"x"}"#);
    add("duplicate error", br#"{"error":"x","error":"y"}"#);
    add("duplicate null", br#"{"error":null,"error":null}"#);
    add("duplicate unknown", br#"{"foo":1,"foo":2}"#);
    add("three fields", br#"{"a":1,"b":2,"c":3}"#);
    add(
        "unknown after long value",
        format!(r#"{{"error":"{}","foo":1}}"#, "z".repeat(700)).as_bytes(),
    );
    add("trailing brace", br#"{"error":"x"}}"#);
    add("trailing bracket", br#"{"error":"x"}["#);
    add("trailing open comment", br#"{"error":"x"} /*"#);
    add("root array", b"[]");
    add("root string", b"\"x\"");
    add("root number", b"1");
    add("root minus", b"-");
    add("root tru", b"tru");
    add("root nul", b"nul");
    add("root space", b" ");
    add("root tab", b"\t");
    add("root NUL byte", b"\x00");
    add("empty object with spaces", b"{ }");
    add("UTF-16BE without BOM", &utf16(r#"{"error":"x"}"#, true));
    add("UTF-16LE without BOM", &utf16(r#"{"error":"x"}"#, false));
    add(
        "UTF-16BE with BOM",
        &[&b"\xfe\xff"[..], &utf16(r#"{"error":"x"}"#, true)].concat(),
    );
    add("UTF-16LE invalid", &utf16(r#"{"error":1}"#, false));
    add("UTF-32BE", &utf32(r#"{"error":"x"}"#));
    add("UTF-32BE invalid", &utf32(r#"{"foo":"x"}"#));
    v.into_iter()
        .map(|(name, body)| (format!("seed: {name}"), body))
        .collect()
}

fn utf16(s: &str, big_endian: bool) -> Vec<u8> {
    s.encode_utf16()
        .flat_map(|u| if big_endian { u.to_be_bytes() } else { u.to_le_bytes() })
        .collect()
}

fn utf32(s: &str) -> Vec<u8> {
    s.chars().flat_map(|c| u32::from(c).to_be_bytes()).collect()
}
