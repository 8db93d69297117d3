//! The redactor: removes secrets from any text before it leaves the process.
//!
//! Two linear scans, no backtracking: first the exact values moat knows are secret (every
//! resolved credential, later every vault entry) with one Aho-Corasick automaton; then
//! the common credential shapes with one combined regex (`sk-ant-...`, `sk-...`, JWTs,
//! `Bearer`/`Basic` values, provider token formats, PEM private keys, `key=`/`token=`/
//! `password=` parameters, JSON string fields with such names, and `x-api-key:`-style
//! headers). Exact values go first so a shape can never cut a known secret in half and
//! leave its tail behind. Where a shape has a telling prefix (`Bearer `, `"token": "`),
//! the prefix is kept so the redacted text still says what was there.
//!
//! Every log line passes through it ([`RedactingMakeWriter`]), and so does every error
//! body sent to a client.
//!
//! ```
//! use moat_core::redact::Redactor;
//! let r = Redactor::new();
//! r.add_known_secret("hunter2-horse-battery");
//! let out = r.redact("sent Bearer sk-ant-api03-fake-example-key with hunter2-horse-battery");
//! assert_eq!(out, "sent Bearer [REDACTED] with [REDACTED]");
//! ```

use std::borrow::Cow;
use std::io::{self, Write};
use std::sync::{Arc, LazyLock, RwLock};

use aho_corasick::{AhoCorasick, AhoCorasickKind, MatchKind};
use regex::{Captures, Regex};

/// What a redacted value is replaced with.
pub const MARK: &str = "[REDACTED]";

/// Known values shorter than this are not matched: they would blank out ordinary words.
pub const MIN_KNOWN_SECRET_LEN: usize = 6;

/// Known secrets longer than this are matched as pieces of [`KNOWN_PIECE_LEN`] bytes (the
/// last piece runs to the end): every copy of the value is still covered end to end, and
/// a repetitive value makes one piece, not a pattern whose matcher takes quadratic time
/// to build. (A value that is one piece repeated may keep a remainder shorter than two
/// pieces in view; no credential has that shape.)
const WHOLE_UP_TO: usize = 4096;
const KNOWN_PIECE_LEN: usize = 1024;

/// What of `value` the matcher looks for: the value, or its pieces when it is long.
fn known_pieces(value: &str) -> Vec<&str> {
    if value.len() <= WHOLE_UP_TO {
        return vec![value];
    }
    let mut pieces = Vec::new();
    let mut start = 0;
    while start < value.len() {
        let mut end = (start + KNOWN_PIECE_LEN).min(value.len());
        // The remainder joins the last piece rather than being a short one of its own.
        if value.len() - end < KNOWN_PIECE_LEN {
            end = value.len();
        }
        while !value.is_char_boundary(end) {
            end += 1;
        }
        pieces.push(&value[start..end]);
        start = end;
    }
    pieces
}

/// moat's references to a credential (`secret:NAME`, `env:VAR`), by their grammar.
const REFERENCE: &str = r"(?:secret:[A-Za-z0-9_.\-]{1,128}|env:[A-Za-z_][A-Za-z0-9_]{0,127})";

/// Names that mark a parameter, header or JSON field as secret-bearing.
const SECRET_NAME: &str = r"[A-Za-z0-9_.\-]*(?:key|token|passw(?:or)?d|pwd|secret|credential|auth|signature|cookie|session)[A-Za-z0-9_.\-]*";

/// Each shape: an optional kept prefix (`pre`), the secret, and an optional kept suffix.
fn shapes() -> Vec<String> {
    [
        // Counts with secret-looking names (`max_tokens=1024`, `input_tokens: 7`) and
        // references to where a credential is (`key = "secret:NAME"`, `api_key=env:VAR`:
        // moat's own config syntax, never a value) are kept whole: the `keep`
        // alternative wins at their position, before the secret shapes.
        // A reference is a whole value: its name's grammar, then its end (quote,
        // space, separator or the end of the text); anything else is not one.
        // A file path whose last part has a secret-looking name, before a colon, is a
        // path in a message ("/etc/moat/key.pem: no certificate found"), not a field.
        format!(
            r#"(?P<keep>(?i:\b[A-Za-z0-9_.\-]*(?:tokens|_count|_len|_size|_ms|_secs))[ \t]*[=:][ \t]*[0-9]+\b|(?i:\b{SECRET_NAME})[ \t]*(?:=|:[ \t])[ \t]*(?:"{REFERENCE}"|'{REFERENCE}'|{REFERENCE}(?:[\s,;&)`\]]|$))|/(?i:{SECRET_NAME}):[ \t])"#
        ),
        // PEM private keys, whole block.
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]*?-----END [A-Z ]*PRIVATE KEY-----".to_string(),
        // JSON string fields with a secret-bearing name: keep the name and the quotes.
        format!(r#"(?P<pre0>(?i:"{SECRET_NAME}")\s*:\s*")(?:[^"\\]|\\.)+(?P<post0>")"#),
        // The same inside an escaped JSON string (JSON logs, `?`-formatted fields).
        format!(r#"(?P<pre1>(?i:\\"{SECRET_NAME}\\")\s*:\s*\\")(?:[^"\\]|\\[^"])+(?P<post1>\\")"#),
        // Authorization schemes.
        r"(?P<pre2>(?i:\b(?:bearer|basic|token|digest)) +)[A-Za-z0-9._~+/=\-]{6,}".to_string(),
        // Header-style `x-api-key: value`, `authorization=value`.
        r"(?P<pre3>(?i:\b(?:x-api-key|api-key|x-goog-api-key|authorization|proxy-authorization|cookie|set-cookie|x-moat-control-token))\s*[:=]\s*)(?:(?i:bearer|basic|token|digest) +)?[^\s,;]+"
            .to_string(),
        // Quoted assignments: `password="x y"`, `secret: 'x'`.
        format!(r#"(?P<pre4>(?i:\b{SECRET_NAME})[ \t]*(?:=|:[ \t])[ \t]*")[^"\n]+(?P<post4>")"#),
        format!(r#"(?P<pre5>(?i:\b{SECRET_NAME})[ \t]*(?:=|:[ \t])[ \t]*')[^'\n]+(?P<post5>')"#),
        // Query strings, form bodies and plain assignments: `?key=...`, `password = x`.
        format!(r#"(?P<pre6>(?i:\b{SECRET_NAME})[ \t]*(?:=|:[ \t])[ \t]*)[^&\s"'#<>,;]+"#),
    ]
    .into_iter()
    .chain(PROVIDER_SHAPES.iter().map(|s| s.to_string()))
    .collect()
}

/// Provider key formats, and JWTs (the signature may be empty for alg=none).
const PROVIDER_SHAPES: &[&str] = &[
    r"\bsk-ant-[A-Za-z0-9_\-]{8,}",
    r"\bsk-[A-Za-z0-9_\-]{16,}",
    r"\b(?:gh[pousr]|github_pat)_[A-Za-z0-9_]{20,}",
    r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b",
    r"\bxox[abprs]-[A-Za-z0-9\-]{10,}",
    r"\bAIza[0-9A-Za-z_\-]{35}",
    r"\b(?:hf|gsk|glpat|r8|pplx|xai)[_-][A-Za-z0-9_\-]{20,}",
    r"\beyJ[A-Za-z0-9_\-]{4,}\.eyJ[A-Za-z0-9_\-]{4,}\.[A-Za-z0-9_\-]*",
];

static PROVIDER_KEYS: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(&PROVIDER_SHAPES.join("|")).expect("provider key patterns are valid")
});

/// Whether `text` holds something in a known provider key format (`sk-ant-…`, `ghp_…`,
/// a JWT...): for refusing a key pasted where a name belongs.
pub fn looks_like_provider_key(text: &str) -> bool {
    PROVIDER_KEYS.is_match(text)
}

static SHAPES: LazyLock<Regex> = LazyLock::new(|| {
    let alternation = shapes()
        .iter()
        .map(|s| format!("(?:{s})"))
        .collect::<Vec<_>>()
        .join("|");
    Regex::new(&alternation).expect("credential shape patterns are valid")
});

/// Number of `preN`/`postN` capture pairs in [`shapes`].
const KEPT_GROUPS: usize = 7;

static GLOBAL: LazyLock<Arc<Redactor>> = LazyLock::new(|| Arc::new(Redactor::new()));

/// The process-wide redactor that logs and error bodies use.
pub fn global() -> Arc<Redactor> {
    GLOBAL.clone()
}

/// Removes known secret values and credential shapes from text.
#[derive(Default)]
pub struct Redactor {
    known: RwLock<Known>,
}

#[derive(Default)]
struct Known {
    values: Vec<String>,
    automaton: Option<AhoCorasick>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let n = self.known.read().map(|k| k.values.len()).unwrap_or(0);
        f.debug_struct("Redactor")
            .field("known_values", &n)
            .finish()
    }
}

impl Redactor {
    /// A redactor that knows only the credential shapes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds an exact value to redact wherever it appears.
    ///
    /// Values shorter than [`MIN_KNOWN_SECRET_LEN`] bytes are ignored (they are still
    /// caught by the shapes if they have one).
    pub fn add_known_secret(&self, value: &str) {
        if value.len() < MIN_KNOWN_SECRET_LEN {
            return;
        }
        let mut known = self
            .known
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let before = known.values.len();
        for piece in known_pieces(value) {
            if !known.values.iter().any(|v| v == piece) {
                known.values.push(piece.to_string());
            }
        }
        if known.values.len() == before {
            return;
        }
        // A contiguous NFA: its size follows the patterns' bytes, where a DFA's would
        // multiply them by the alphabet (a 1 MB value took half a gigabyte).
        known.automaton = AhoCorasick::builder()
            .match_kind(MatchKind::LeftmostLongest)
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .build(&known.values)
            .ok();
    }

    /// Returns `text` with every secret replaced by [`MARK`]; borrows when nothing matched.
    pub fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let exact = {
            let known = self
                .known
                .read()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            match &known.automaton {
                Some(ac) if ac.is_match(text) => {
                    Cow::Owned(ac.replace_all(text, &vec![MARK; known.values.len()]))
                }
                _ => Cow::Borrowed(text),
            }
        };
        match exact {
            Cow::Borrowed(t) => redact_shapes(t),
            Cow::Owned(t) => Cow::Owned(redact_shapes(&t).into_owned()),
        }
    }

    /// `bytes` with every exact known secret replaced by [`MARK`], or `None` when none is
    /// in them. Only the exact values, never the shapes: an answer that shows code with
    /// `sk-...` placeholders or `password = x` belongs to the client as it is, but a value
    /// moat holds never leaves it.
    pub fn mask_known(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let known = self
            .known
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ac = known.automaton.as_ref()?;
        if !ac.is_match(bytes) {
            return None;
        }
        let marks = vec![MARK.as_bytes(); known.values.len()];
        Some(ac.replace_all_bytes(bytes, &marks))
    }

    /// Redacts bytes that may not be UTF-8 (invalid sequences become U+FFFD).
    pub fn redact_bytes(&self, bytes: &[u8]) -> String {
        self.redact(&String::from_utf8_lossy(bytes)).into_owned()
    }
}

fn redact_shapes(text: &str) -> Cow<'_, str> {
    SHAPES.replace_all(text, |caps: &Captures<'_>| {
        if let Some(keep) = caps.name("keep") {
            // A key pasted where its name belongs (`secret:sk-ant-...`) is still a key.
            return PROVIDER_KEYS.replace_all(keep.as_str(), MARK).into_owned();
        }
        let mut out = String::new();
        let mut post = "";
        for i in 0..KEPT_GROUPS {
            if let Some(pre) = caps.name(&format!("pre{i}")) {
                out.push_str(pre.as_str());
                post = caps.name(&format!("post{i}")).map_or("", |m| m.as_str());
                break;
            }
        }
        out.push_str(MARK);
        out.push_str(post);
        out
    })
}

/// A `tracing_subscriber` writer factory that redacts every event before writing it.
///
/// The fmt layer formats one event into one writer and then drops it; this writer
/// buffers the event, redacts it as a whole and writes it out on drop.
pub struct RedactingMakeWriter<M> {
    inner: M,
    redactor: Arc<Redactor>,
}

impl<M> RedactingMakeWriter<M> {
    /// Wraps `inner` so everything written through it is redacted by `redactor`.
    pub fn new(inner: M, redactor: Arc<Redactor>) -> Self {
        Self { inner, redactor }
    }
}

impl<'a, M: tracing_subscriber::fmt::MakeWriter<'a>> tracing_subscriber::fmt::MakeWriter<'a>
    for RedactingMakeWriter<M>
{
    type Writer = RedactingWriter<M::Writer>;
    fn make_writer(&'a self) -> Self::Writer {
        RedactingWriter {
            buf: Vec::new(),
            inner: self.inner.make_writer(),
            redactor: self.redactor.clone(),
        }
    }
}

/// One event's worth of output, redacted when dropped.
pub struct RedactingWriter<W: Write> {
    buf: Vec<u8>,
    inner: W,
    redactor: Arc<Redactor>,
}

impl<W: Write> Write for RedactingWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for RedactingWriter<W> {
    fn drop(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let text = self.redactor.redact_bytes(&self.buf);
        // A log line that cannot be written has nowhere to be reported.
        let _ = self.inner.write_all(text.as_bytes());
        let _ = self.inner.flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(text: &str) -> String {
        Redactor::new().redact(text).into_owned()
    }

    #[test]
    fn provider_keys() {
        assert_eq!(
            r("key sk-ant-api03-fake0123456789_-xyz end"),
            "key [REDACTED] end"
        );
        assert_eq!(r("sk-proj-0123456789abcdefABCDEF"), "[REDACTED]");
        assert_eq!(r("ghp_0123456789abcdefghijABCDEFGHIJ012345"), "[REDACTED]");
        assert_eq!(r("AKIAIOSFODNN7EXAMPLE"), "[REDACTED]");
        assert_eq!(r("a task-list sk-short"), "a task-list sk-short");
    }

    #[test]
    fn jwts() {
        let jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U";
        assert_eq!(r(&format!("t={jwt} ok")), "t=[REDACTED] ok");
        assert_eq!(r(&format!("jwt {jwt}")), "jwt [REDACTED]");
    }

    #[test]
    fn authorization_values_keep_their_scheme() {
        assert_eq!(
            r("Authorization: Bearer abc.def-ghi_jkl"),
            "Authorization: [REDACTED]"
        );
        assert_eq!(r("header bearer abcdefgh1234"), "header bearer [REDACTED]");
        assert_eq!(r("Basic dXNlcjpwYXNzd29yZA=="), "Basic [REDACTED]");
        assert_eq!(r("x-api-key: plainvalue123"), "x-api-key: [REDACTED]");
    }

    #[test]
    fn query_and_form_parameters() {
        assert_eq!(
            r("GET /cb?code=1&access_token=abc123&state=x"),
            "GET /cb?code=1&access_token=[REDACTED]&state=x"
        );
        assert_eq!(
            r("password=hunter2&user=bob"),
            "password=[REDACTED]&user=bob"
        );
        assert_eq!(r("url?key=AIzaXYZ"), "url?key=[REDACTED]");
        assert_eq!(
            r("model=claude-x&stream=true"),
            "model=claude-x&stream=true"
        );
        assert_eq!(
            r("max_tokens=1024 input_tokens=7"),
            "max_tokens=1024 input_tokens=7"
        );
    }

    #[test]
    fn json_fields_by_name() {
        assert_eq!(
            r(r#"{"api_key": "abc", "model": "m", "refresh_token":"x\"y", "n": 3}"#),
            r#"{"api_key": "[REDACTED]", "model": "m", "refresh_token":"[REDACTED]", "n": 3}"#
        );
        assert_eq!(r(r#"{"Password":"p"}"#), r#"{"Password":"[REDACTED]"}"#);
    }

    #[test]
    fn assignments_in_any_spelling() {
        assert_eq!(r(r#"password="two words""#), r#"password="[REDACTED]""#);
        assert_eq!(r("secret: 'x y'"), "secret: '[REDACTED]'");
        assert_eq!(r("password = hunter2 next"), "password = [REDACTED] next");
        assert_eq!(r("api_key: abc123, other"), "api_key: [REDACTED], other");
        // A reference names a secret; it is not one.
        assert_eq!(
            r("refers to secret:openai-main"),
            "refers to secret:openai-main"
        );
    }

    #[test]
    fn escaped_json_fields() {
        assert_eq!(
            r(r#"body="{"password":"hunter2","model":"m"}""#),
            r#"body="{"password":"[REDACTED]","model":"m"}""#
        );
    }

    #[test]
    fn private_keys() {
        let pem =
            "-----BEGIN PRIVATE KEY-----\nfakeKeyMaterialForTheTest\n-----END PRIVATE KEY-----";
        assert_eq!(r(&format!("key:\n{pem}\nafter")), "key:\n[REDACTED]\nafter");
    }

    #[test]
    fn known_values_win_over_shapes_and_are_removed_whole() {
        let red = Redactor::new();
        red.add_known_secret("correct horse battery staple");
        red.add_known_secret("short");
        assert_eq!(
            red.redact("the password is correct horse battery staple!"),
            "the password is [REDACTED]!"
        );
        assert_eq!(red.redact("a short word"), "a short word");
    }

    #[test]
    fn references_to_credentials_are_not_credentials() {
        let r = |t: &str| Redactor::new().redact(t).into_owned();
        assert_eq!(
            r(r#"set `key = "secret:NAME"` or api_key=env:MOAT_KEY"#),
            r#"set `key = "secret:NAME"` or api_key=env:MOAT_KEY"#
        );
        assert_eq!(r(r#"key = "sk-live-value""#), r#"key = "[REDACTED]""#);
        // Only a whole reference is one; a key pasted as its name is still a key.
        assert_eq!(r("password=secret:abc/def+ghi"), "password=[REDACTED]");
        assert_eq!(
            r(r#"password = "secret:abc def""#),
            r#"password = "[REDACTED]""#
        );
        // A fake key, spelled in parts so no scanner takes the source for a leak.
        let pasted = format!(
            r#"api_key = "secret:{}{}""#,
            "sk-ant-", "fake0canary0abcdefgh"
        );
        assert_eq!(r(&pasted), r#"api_key = "secret:[REDACTED]""#);
        assert_eq!(
            r("token: env:ghp_abcdefghijklmnopqrstuvwxyz0123"),
            "token: env:[REDACTED]"
        );
    }

    #[test]
    fn long_known_values_are_covered_by_pieces() {
        let red = Redactor::new();
        // 10 KB that no shape would catch, and 60 KB of one letter.
        let long: String = (0..10_000u32)
            .map(|i| char::from(b'a' + (i.wrapping_mul(2_654_435_761) >> 27) as u8 % 26))
            .collect();
        let repetitive = "x".repeat(60_000);
        red.add_known_secret(&long);
        red.add_known_secret(&repetitive);
        let out = red.redact(&format!("before {long} after")).into_owned();
        assert!(out.starts_with("before [REDACTED]") && out.ends_with("[REDACTED] after"));
        assert!(!out.contains(&long[..1000]) && !out.contains(&long[9000..]));
        // A value that repeats one piece can leave less than two pieces' worth over.
        let out = red.redact(&format!("({repetitive})")).into_owned();
        let left = out.matches('x').count();
        assert!(left < 2 * KNOWN_PIECE_LEN, "{left} of 60000 left");
        for piece in known_pieces(&long) {
            assert!(piece.len() >= KNOWN_PIECE_LEN && piece.len() < 2 * KNOWN_PIECE_LEN);
        }
        assert_eq!(known_pieces(&long).concat(), long);
    }

    #[test]
    fn untouched_text_is_borrowed() {
        let red = Redactor::new();
        red.add_known_secret("canary-value-123");
        assert!(matches!(red.redact("nothing here"), Cow::Borrowed(_)));
    }

    #[test]
    fn writer_redacts_whole_events() {
        use tracing_subscriber::fmt::MakeWriter;
        let red = Arc::new(Redactor::new());
        red.add_known_secret("canary-writer-secret");
        let sink = Arc::new(std::sync::Mutex::new(Vec::<u8>::new()));
        struct Sink(Arc<std::sync::Mutex<Vec<u8>>>);
        impl Write for Sink {
            fn write(&mut self, b: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(b);
                Ok(b.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let s2 = sink.clone();
        let mw = RedactingMakeWriter::new(move || Sink(s2.clone()), red);
        {
            let mut w = mw.make_writer();
            // A secret split across two writes is still caught.
            w.write_all(b"value=canary-wri").unwrap();
            w.write_all(b"ter-secret done\n").unwrap();
        }
        assert_eq!(
            String::from_utf8(sink.lock().unwrap().clone()).unwrap(),
            "value=[REDACTED] done\n"
        );
    }

    #[test]
    fn paths_in_moat_messages_are_not_fields() {
        let r = Redactor::new();
        for text in [
            "cannot load TLS certificate from /etc/moat/key.pem: no certificate found",
            "cannot write /home/me/.moat/control.token: Permission denied (os error 13)",
            "cannot read /srv/secrets/api-key.txt: No such file or directory",
        ] {
            assert_eq!(r.redact(text), text);
        }
        // Fields still are, paths or not.
        assert_eq!(r.redact("token: abcdef123"), "token: [REDACTED]");
        assert_eq!(
            r.redact("/etc/moat/key.pem: sk-ant-api03-abcdefghijkl"),
            "/etc/moat/key.pem: [REDACTED]"
        );
    }

    #[test]
    fn masking_takes_exact_values_only() {
        let r = Redactor::new();
        assert_eq!(r.mask_known(b"nothing known yet"), None);
        r.add_known_secret("vault-value-0123456789");
        assert_eq!(r.mask_known(b"{\"text\":\"plain\"}"), None);
        assert_eq!(
            r.mask_known(b"{\"text\":\"it is vault-value-0123456789!\"}")
                .unwrap(),
            b"{\"text\":\"it is [REDACTED]!\"}"
        );
        // Shapes are the client's content here.
        assert_eq!(
            r.mask_known(b"use sk-ant-api03-EXAMPLEKEY000000 here"),
            None
        );
    }
}
