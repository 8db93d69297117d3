//! How much the assistant does for whom: messages per sender per minute, tokens per
//! session over a sliding window, and turns running at once. A refusal names the limit,
//! its setting, and when it lets go.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use moat_core::config::agent::AgentConfig;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// A turn refused by a limit: what to tell the sender.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The limits, with what each has counted.
pub struct Limits {
    messages_per_minute: u32,
    token_budget: u64,
    token_window: Duration,
    messages: Mutex<HashMap<String, VecDeque<Instant>>>,
    tokens: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
    turns: Arc<Semaphore>,
    max_turns: u32,
}

/// Whole seconds until `d` passes, at least 1: what a refusal says.
fn secs(d: Duration) -> u64 {
    d.as_secs().max(1) + u64::from(d.subsec_nanos() > 0 && d.as_secs() > 0)
}

impl Limits {
    /// The limits `[agent]` sets.
    pub fn new(config: &AgentConfig) -> Limits {
        Limits {
            messages_per_minute: config.messages_per_minute,
            token_budget: config.token_budget,
            token_window: config.token_window,
            messages: Mutex::new(HashMap::new()),
            tokens: Mutex::new(HashMap::new()),
            turns: Arc::new(Semaphore::new(config.max_concurrent_turns as usize)),
            max_turns: config.max_concurrent_turns,
        }
    }

    /// Lets one turn of `sender` in `session` start, or says which limit refuses it.
    /// The permit holds a place among the turns running until it is dropped.
    pub fn admit(&self, sender: &str, session: &str) -> Result<OwnedSemaphorePermit, Refused> {
        let now = Instant::now();
        {
            let mut all = self.messages.lock().unwrap_or_else(PoisonError::into_inner);
            let seen = all.entry(sender.to_string()).or_default();
            while seen
                .front()
                .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
            {
                seen.pop_front();
            }
            if seen.len() >= self.messages_per_minute as usize {
                let wait = seen.front().map_or(Duration::ZERO, |t| {
                    Duration::from_secs(60).saturating_sub(now.duration_since(*t))
                });
                return Err(Refused(format!(
                    "too many messages: {} a minute is the limit (agent.messages_per_minute); try again in {} s",
                    self.messages_per_minute,
                    secs(wait)
                )));
            }
            seen.push_back(now);
        }
        {
            let mut all = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
            let spent = all.entry(session.to_string()).or_default();
            while spent
                .front()
                .is_some_and(|(t, _)| now.duration_since(*t) >= self.token_window)
            {
                spent.pop_front();
            }
            let used: u64 = spent.iter().map(|(_, n)| n).sum();
            if used >= self.token_budget {
                let wait = spent.front().map_or(Duration::ZERO, |(t, _)| {
                    self.token_window.saturating_sub(now.duration_since(*t))
                });
                return Err(Refused(format!(
                    "this conversation used {used} tokens, its budget (agent.token_budget) over {} (agent.token_window); it frees up in {} s",
                    humantime::format_duration(self.token_window),
                    secs(wait)
                )));
            }
        }
        self.turns.clone().try_acquire_owned().map_err(|_| {
            Refused(format!(
                "the assistant is busy: {} turns are running, the most at once (agent.max_concurrent_turns); try again when one ends",
                self.max_turns
            ))
        })
    }

    /// Counts tokens a session's model call used.
    pub fn spent(&self, session: &str, tokens: u64) {
        let mut all = self.tokens.lock().unwrap_or_else(PoisonError::into_inner);
        all.entry(session.to_string())
            .or_default()
            .push_back((Instant::now(), tokens));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(messages: u32, budget: u64, turns: u32) -> Limits {
        Limits::new(&AgentConfig {
            messages_per_minute: messages,
            token_budget: budget,
            max_concurrent_turns: turns,
            ..AgentConfig::default()
        })
    }

    #[test]
    fn each_limit_refuses_by_name_and_says_when() {
        let l = limits(2, 1000, 8);
        drop(l.admit("ann", "s1").unwrap());
        drop(l.admit("ann", "s1").unwrap());
        let r = l.admit("ann", "s1").unwrap_err();
        assert!(
            r.0.contains("agent.messages_per_minute") && r.0.contains("try again in"),
            "{r}"
        );
        assert!(
            l.admit("bob", "s2").is_ok(),
            "another sender is not counted with ann"
        );

        let l = limits(100, 1000, 8);
        l.spent("s1", 600);
        l.spent("s1", 500);
        let r = l.admit("ann", "s1").unwrap_err();
        assert!(
            r.0.contains("agent.token_budget") && r.0.contains("1100"),
            "{r}"
        );
        assert!(l.admit("ann", "s2").is_ok());

        let l = limits(100, 1000, 1);
        let running = l.admit("ann", "s1").unwrap();
        let r = l.admit("bob", "s2").unwrap_err();
        assert!(r.0.contains("agent.max_concurrent_turns"), "{r}");
        drop(running);
        assert!(l.admit("bob", "s2").is_ok());
    }
}
