//! Redaction of a record before it is queued: by field name, and by value.
//!
//! - A detail whose name contains password, secret, token, key, credential, auth, bearer,
//!   apikey or cookie (any case, at any depth, in arrays too) has its whole value replaced,
//!   whatever its type.
//! - Every remaining string, and every field of the record, passes moat's redactor, which
//!   knows the vault's values and common credential shapes.

use moat_core::redact::Redactor;
use serde_json::Value;

use crate::entry::Record;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";

const SENSITIVE: &[&str] = &[
    "password",
    "secret",
    "token",
    "key",
    "credential",
    "auth",
    "bearer",
    "apikey",
    "cookie",
];

/// Whether a field named `name` holds something never to be written.
pub fn sensitive_name(name: &str) -> bool {
    let lower = name.to_ascii_lowercase();
    SENSITIVE.iter().any(|s| lower.contains(s))
}

/// Redacts every part of `record` in place.
pub fn redact(record: &mut Record) {
    let redactor = moat_core::redact::global();
    for field in [
        &mut record.actor,
        &mut record.action,
        &mut record.target,
        &mut record.outcome,
    ] {
        if let std::borrow::Cow::Owned(clean) = redactor.redact(field) {
            *field = clean;
        }
    }
    redact_map(&redactor, &mut record.details);
}

fn redact_map(redactor: &Redactor, map: &mut serde_json::Map<String, Value>) {
    let keys: Vec<String> = map.keys().cloned().collect();
    for key in keys {
        let mut value = map.remove(&key).expect("the key was just listed");
        if sensitive_name(&key) {
            value = Value::String(REDACTED.into());
        } else {
            redact_value(redactor, &mut value);
        }
        // A name can carry a secret too (a map keyed by token): it passes the redactor.
        let key = redactor.redact(&key).into_owned();
        map.insert(key, value);
    }
}

fn redact_value(redactor: &Redactor, value: &mut Value) {
    match value {
        Value::String(s) => {
            if let std::borrow::Cow::Owned(clean) = redactor.redact(s) {
                *s = clean;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| redact_value(redactor, v)),
        Value::Object(map) => redact_map(redactor, map),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn names_at_any_depth_and_values_anywhere() {
        moat_core::redact::global().add_known_secret("vault-value-CANARY-123456");
        let mut r = Record::new("cli:me", "x.y", "vault-value-CANARY-123456", "ok");
        r.details = json!({
            "Authorization": "Bearer abc",
            "nested": {"api_key": {"deep": 1}, "list": [{"Cookie": "c=1"}, "vault-value-CANARY-123456"]},
            "PassWord": ["a", "b"],
            "plain": "fine",
            "count": 3,
        })
        .as_object()
        .unwrap()
        .clone();
        redact(&mut r);
        let text = serde_json::to_string(&r.details).unwrap() + &r.target;
        assert!(!text.contains("CANARY"), "{text}");
        assert!(!text.contains("abc") && !text.contains("c=1"), "{text}");
        assert_eq!(r.details["Authorization"], REDACTED);
        assert_eq!(r.details["nested"]["api_key"], REDACTED);
        assert_eq!(r.details["nested"]["list"][0]["Cookie"], REDACTED);
        assert_eq!(r.details["PassWord"], REDACTED);
        assert_eq!(r.details["plain"], "fine");
        assert_eq!(r.details["count"], 3);
    }
}
