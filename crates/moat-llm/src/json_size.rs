//! Bounds on what turning JSON into a `serde_json::Value` may cost.
//!
//! A parsed `Value` takes far more memory than its text: `{"a":0}` is 7 bytes of JSON and
//! several hundred bytes of map, so a 10 MiB body of tiny objects became ~900 MiB inside
//! moat. Documents that moat parses whole (to translate them, to store a conversation)
//! have their values counted first, by a scan that allocates nothing, and are refused
//! past [`MAX_VALUES`]; a real request (a long agent conversation with a hundred tools)
//! has tens of thousands.

use serde_json::Value;

/// Most values (objects, arrays and their members) in a document moat parses whole.
pub(crate) const MAX_VALUES: usize = 100_000;

/// Most bytes of a Responses conversation once its stored history is put back in front
/// of the new input: far past any model's context window, and what one request may make
/// moat send and store.
pub(crate) const MAX_CONVERSATION_BYTES: usize = 16 * 1024 * 1024;

/// Why a document was not parsed.
#[derive(Debug)]
pub(crate) enum Refused {
    /// More than [`MAX_VALUES`] values.
    TooManyValues,
    /// Not JSON.
    Invalid(serde_json::Error),
}

/// Parses `json` unless it holds more than [`MAX_VALUES`] values.
pub(crate) fn parse(json: &[u8]) -> Result<Value, Refused> {
    if more_values_than(json, MAX_VALUES) {
        return Err(Refused::TooManyValues);
    }
    serde_json::from_slice(json).map_err(Refused::Invalid)
}

/// Whether `json` has more than `limit` values, counting the openings of objects and
/// arrays and the commas between members, outside strings. Malformed text is counted
/// the same way; the parser refuses it afterwards.
pub(crate) fn more_values_than(json: &[u8], limit: usize) -> bool {
    structure(json)
        .filter(|&(_, b)| matches!(b, b'{' | b'[' | b','))
        .nth(limit)
        .is_some()
}

/// The bytes of `json` outside strings (with their offsets): its structure, read without
/// allocating or parsing.
fn structure(json: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut in_string = false;
    let mut escaped = false;
    json.iter().enumerate().filter_map(move |(i, &b)| {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            return None;
        }
        in_string = b == b'"';
        Some((i, b))
    })
}

/// Deepest nesting of objects and arrays moat accepts in a request, as deep as
/// `serde_json` parses (its limit of 128 stops at the 128th level): a request forwarded
/// untranslated is not parsed by moat, and an upstream with a recursive parser (a local
/// model server) could be crashed by one nested a hundred thousand levels.
pub(crate) const MAX_DEPTH: usize = 127;

/// The byte offset where `json` first nests objects and arrays deeper than `limit`, if
/// it does, counting brackets outside strings with a scan that allocates nothing.
pub(crate) fn nested_deeper_than(json: &[u8], limit: usize) -> Option<usize> {
    let mut depth = 0usize;
    structure(json).find_map(|(i, b)| {
        match b {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
        (depth > limit).then_some(i)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nesting_is_measured_outside_strings_only() {
        let nested = |n: usize| format!("{{\"a\":{}1{}}}", "[".repeat(n), "]".repeat(n));
        // The object and 126 arrays: 127 levels, as deep as serde_json goes.
        assert_eq!(nested_deeper_than(nested(126).as_bytes(), MAX_DEPTH), None);
        assert!(serde_json::from_str::<Value>(&nested(126)).is_ok());
        assert_eq!(
            nested_deeper_than(nested(127).as_bytes(), MAX_DEPTH),
            Some(5 + 126)
        );
        assert!(serde_json::from_str::<Value>(&nested(127)).is_err());
        let quoted = format!(r#"{{"a":"{}\"{}"}}"#, "[".repeat(500), "{".repeat(500));
        assert_eq!(nested_deeper_than(quoted.as_bytes(), MAX_DEPTH), None);
        // Siblings do not add up: depth comes back down.
        let wide = format!("[{}]", vec!["[[[1]]]"; 1000].join(","));
        assert_eq!(nested_deeper_than(wide.as_bytes(), 4), None);
        assert_eq!(nested_deeper_than(wide.as_bytes(), 3), Some(3));
    }

    #[test]
    fn values_are_counted_outside_strings_only() {
        assert!(!more_values_than(br#"{"a":[1,2,3]}"#, 4));
        assert!(more_values_than(br#"{"a":[1,2,3]}"#, 3));
        // Brackets and commas inside strings, escaped quotes included, are text.
        let text = br#"{"a":"[[[,,,{{{\"[[[,,,"}"#;
        assert!(!more_values_than(text, 1));
        let tiny_objects = format!("[{}]", vec![r#"{"a":0}"#; 200_000].join(","));
        assert!(matches!(
            parse(tiny_objects.as_bytes()),
            Err(Refused::TooManyValues)
        ));
        assert!(matches!(parse(b"{\"a\":"), Err(Refused::Invalid(_))));
        assert_eq!(parse(br#"{"a":[1]}"#).unwrap()["a"][0], 1);
    }
}
