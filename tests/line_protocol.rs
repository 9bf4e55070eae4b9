//! Property tests of the line-protocol encoder: random lines, heavy on the characters that need
//! escaping, are encoded and parsed back with InfluxDB's own parser (the
//! `influxdb-line-protocol` crate from IOx, a parser we did not write), and every name, value
//! and timestamp must come back as it went in, or as the encoder's documented rules change it
//! (control characters become spaces, trailing backslashes go, empty names are left out). The
//! county ingest's parser (`line_protocol::parse`) must read the same measurement and tags back.
//!
//! The generator is a few lines over a xorshift: it needs no shrinking because a failure prints
//! the seed and the line, and any seed can be replayed with `SHOPFLOOR_LP_SEED=<seed>`.

mod line_protocol_model;

use influxdb_line_protocol::parse_lines;
use jiff::Timestamp;
use line_protocol_model::{Case, Field, check, encode};
use shopfloor::line_protocol::Precision;
use shopfloor::line_protocol::parse::parse_key;

/// Lines per test run: enough to hit every pair of special characters many times, quick in a
/// debug build (well under a second).
const CASES: u64 = 3000;

struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }
    fn next(&mut self) -> u64 {
        // xorshift64*
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// Characters that mean something to line protocol, and some that do not.
const ALPHABET: &[char] = &[
    ' ', ',', '=', '"', '\\', '\n', '\r', '\t', '\0', '\u{7f}', '#', 'a', 'Z', '0', '9', '_', '-',
    '.', 'é', '中', '🙂', 'i', 'u', 't',
];

fn text(rng: &mut Rng, max_len: u64) -> String {
    let len = rng.below(max_len + 1);
    (0..len)
        .map(|_| {
            if rng.below(4) == 0 {
                // Any printable ASCII character.
                char::from(b' ' + rng.below(95) as u8)
            } else {
                rng.pick(ALPHABET)
            }
        })
        .collect()
}

fn field(rng: &mut Rng) -> Field {
    let (r1, r2) = (rng.next(), rng.next());
    match rng.below(5) {
        0 => Field::Int(rng.pick(&[0, 1, -1, i64::MIN, i64::MAX, r1 as i64])),
        1 => Field::Uint(rng.pick(&[0, 1, u64::MAX, r1])),
        2 => Field::Float(rng.pick(&[
            0.0,
            -0.0,
            1.0,
            -2.5,
            1e-7,
            1e16,
            f64::MIN_POSITIVE,
            f64::MAX,
            f64::MIN,
            5e-324,
            f64::from_bits(r1),
            f64::from_bits(r2),
        ])),
        3 => Field::Bool(rng.below(2) == 0),
        _ => Field::Str(text(rng, 12)),
    }
}

fn case(rng: &mut Rng) -> Case {
    let mut tags = Vec::new();
    for _ in 0..rng.below(4) {
        tags.push((text(rng, 6), text(rng, 8)));
    }
    let mut fields = Vec::new();
    for _ in 0..1 + rng.below(4) {
        fields.push((text(rng, 6), field(rng)));
    }
    // 1900 to 2200, the range an i64 of nanoseconds holds with a margin.
    let ns = i128::from(rng.next() % 9_400_000_000) * 1_000_000_000 - 2_208_988_800_000_000_000
        + i128::from(rng.below(1_000_000_000));
    Case {
        measurement: text(rng, 8),
        tags,
        fields,
        at: Timestamp::from_nanosecond(ns).expect("in jiff's range"),
        precision: rng.pick(&[Precision::Ns, Precision::Us, Precision::Ms, Precision::S]),
    }
}

fn seeds() -> Vec<u64> {
    match std::env::var("SHOPFLOOR_LP_SEED") {
        Ok(seed) => vec![seed.parse().expect("SHOPFLOOR_LP_SEED is a number")],
        Err(_) => (1..=CASES).collect(),
    }
}

#[test]
fn every_encoded_line_parses_back_to_the_same_values() {
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let case = case(&mut rng);
        let line = encode(&case, false);
        if let Err(why) = check(&case, line.clone()) {
            panic!("seed {seed}: {why}\ncase: {case:?}\nline: {line:?}");
        }
    }
}

#[test]
fn a_tag_prefix_encodes_exactly_like_tags_added_one_by_one() {
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let case = case(&mut rng);
        assert_eq!(
            encode(&case, true),
            encode(&case, false),
            "seed {seed}: {case:?}"
        );
    }
}

#[test]
fn a_body_of_many_lines_parses_line_for_line() {
    // The spool joins lines with `\n`; the parser must see exactly as many lines as went in,
    // whatever the lines hold (a line break that slipped into a value would split one in two).
    let mut rng = Rng::new(42);
    let lines: Vec<String> = (0..500)
        .filter_map(|_| encode(&case(&mut rng), false))
        .collect();
    let body = lines.join("\n");
    let parsed: Vec<_> = parse_lines(&body).collect();
    assert_eq!(parsed.len(), lines.len());
    for (i, result) in parsed.iter().enumerate() {
        assert!(result.is_ok(), "line {i} {:?}: {result:?}", lines[i]);
    }
}

#[test]
fn the_ingest_parser_reads_the_measurement_and_tags_influxdb_reads() {
    // The county ingest judges a line by its measurement and tags (parse_key); it must read
    // them as the store will, whatever the encoder had to escape. Two known limits, left out
    // here (see src/line_protocol/parse.rs; no name of the contract has either): a `"` in a
    // field key is taken for the start of a string and the line refused, and `\=` in a
    // measurement is read as `=` where InfluxDB keeps the backslash.
    for seed in seeds() {
        let mut rng = Rng::new(seed);
        let case = case(&mut rng);
        if case.fields.iter().any(|(k, _)| k.contains('"')) || case.measurement.contains("\\=") {
            continue;
        }
        let Some(line) = encode(&case, false) else {
            continue;
        };
        let parsed: Vec<_> = parse_lines(&line).collect();
        let [Ok(want)] = parsed.as_slice() else {
            panic!("seed {seed}: InfluxDB's parser rejects {line:?}");
        };
        let want_tags: Vec<(String, String)> = want
            .series
            .tag_set
            .iter()
            .flatten()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let got = parse_key(&line).unwrap_or_else(|| panic!("seed {seed}: no key in {line:?}"));
        assert_eq!(
            (got.measurement.as_str(), &got.tags),
            (want.series.measurement.as_str(), &want_tags),
            "seed {seed}: {line:?}"
        );
    }
}
