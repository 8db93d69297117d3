//! Conversation stickiness: which account served a conversation last, so the next turn
//! goes there too and the provider's prompt cache (per account) keeps working.
//!
//! A conversation is the hash of its system prompt and first user message: the part
//! every later turn repeats. The table is bounded and forgets idle conversations.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A bounded map from conversation to account index.
#[derive(Debug)]
pub struct StickyTable {
    entries: HashMap<u64, (usize, Instant)>,
    max: usize,
    idle: Duration,
}

impl StickyTable {
    /// At most `max` conversations, each forgotten after `idle` unused.
    pub fn new(max: usize, idle: Duration) -> Self {
        Self {
            entries: HashMap::new(),
            max,
            idle,
        }
    }

    /// The account a live conversation is on.
    pub fn get(&mut self, conversation: u64, now: Instant) -> Option<usize> {
        match self.entries.get(&conversation) {
            Some(&(account, seen)) if now.duration_since(seen) < self.idle => Some(account),
            Some(_) => {
                self.entries.remove(&conversation);
                None
            }
            None => None,
        }
    }

    /// Puts (or keeps) `conversation` on `account`. When the table is full, idle entries
    /// go first; if none is idle, the new conversation is simply not remembered.
    pub fn set(&mut self, conversation: u64, account: usize, now: Instant) {
        if self.max == 0 {
            return;
        }
        if self.entries.len() >= self.max && !self.entries.contains_key(&conversation) {
            let idle = self.idle;
            self.entries
                .retain(|_, (_, seen)| now.duration_since(*seen) < idle);
            if self.entries.len() >= self.max {
                return;
            }
        }
        self.entries.insert(conversation, (account, now));
    }

    /// Conversations remembered.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no conversation is remembered.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The conversation a request belongs to, in any of the three request formats: the
/// system prompt (`system`, `instructions`, or the leading system/developer messages)
/// and the first user message. `None` when the request has no user message.
pub fn conversation_key(req: &Value) -> Option<u64> {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for field in ["system", "instructions"] {
        if let Some(v) = req.get(field) {
            field.hash(&mut h);
            hash_value(v, &mut h);
        }
    }
    let items: &[Value] = match req.get("messages").or_else(|| req.get("input")) {
        Some(Value::Array(items)) => items,
        Some(text @ Value::String(_)) => {
            // As the same text in a user message hashes: `input: "hi"` and
            // `input: [{"role": "user", "content": "hi"}]` are one conversation.
            "user".hash(&mut h);
            hash_value(text, &mut h);
            return Some(h.finish());
        }
        _ => return None,
    };
    for item in items {
        match item.get("role").and_then(Value::as_str) {
            Some(role @ ("system" | "developer")) => {
                role.hash(&mut h);
                hash_value(&item["content"], &mut h);
            }
            Some("user") => {
                "user".hash(&mut h);
                hash_value(&item["content"], &mut h);
                return Some(h.finish());
            }
            _ => {}
        }
    }
    None
}

fn hash_value(v: &Value, h: &mut impl Hasher) {
    // serde_json's map keeps keys sorted (no preserve_order), so equal values print equal.
    v.to_string().hash(h);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn later_turns_share_the_first_turns_key() {
        let first = json!({"system": "be brief", "messages": [{"role": "user", "content": "hi"}]});
        let later = json!({"system": "be brief", "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "more"}
        ]});
        assert_eq!(conversation_key(&first), conversation_key(&later));
        let other = json!({"system": "be long", "messages": [{"role": "user", "content": "hi"}]});
        assert_ne!(conversation_key(&first), conversation_key(&other));
        let openai = json!({"messages": [
            {"role": "system", "content": "s"}, {"role": "user", "content": "u"}]});
        let openai_other_system = json!({"messages": [
            {"role": "system", "content": "t"}, {"role": "user", "content": "u"}]});
        assert_ne!(
            conversation_key(&openai),
            conversation_key(&openai_other_system)
        );
        assert!(conversation_key(&json!({"input": "hello"})).is_some());
        assert_eq!(
            conversation_key(&json!({"input": "hello"})),
            conversation_key(&json!({"input": [{"role": "user", "content": "hello"}]}))
        );
        assert_eq!(conversation_key(&json!({"messages": []})), None);
    }

    #[test]
    fn bounded_with_idle_expiry() {
        let now = Instant::now();
        let mut t = StickyTable::new(2, Duration::from_secs(10));
        t.set(1, 0, now);
        t.set(2, 1, now);
        t.set(3, 1, now); // full, nothing idle: not remembered
        assert_eq!(t.get(3, now), None);
        assert_eq!(t.get(1, now), Some(0));
        let later = now + Duration::from_secs(11);
        t.set(3, 1, later); // the idle ones make room
        assert_eq!(t.get(3, later), Some(1));
        assert_eq!(t.get(1, later), None);
        assert_eq!(t.len(), 1);
    }
}
