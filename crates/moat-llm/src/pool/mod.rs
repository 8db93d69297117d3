//! Account pools: the credentials behind one backend, and which one a request uses.
//!
//! Every upstream response updates its account's [`Headroom`] from the rate-limit
//! headers. A request picks an account that is not cooling down and not spent:
//!
//! - the conversation's account first ([`sticky`]), while it has headroom;
//! - otherwise by the backend's [`Strategy`]: most headroom (ties go to the account with
//!   fewer requests in flight), round-robin, or fill-first (config order).
//!
//! A 429 cools the account until its limit resets (`retry-after`, else the spent
//! dimension's reset, else thirty seconds). A 401 or 403 cools it with exponential backoff, one
//! minute doubling to thirty, and is reported through [`PoolEvents`] (the server audits
//! it). When no account is usable the request may wait, in a bounded queue and for a
//! bounded time, for the earliest one to come back; then it gets 429 with `Retry-After`.

pub mod headroom;
pub mod sticky;

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, StatusCode};
use moat_core::config::llm::{AuthScheme, PoolConfig, Strategy};
use moat_core::secret::SecretString;
use serde_json::{Value, json};

use crate::errors::ApiError;
use crate::oauth::TokenSource;
pub use headroom::Headroom;
use sticky::StickyTable;

/// A 429 without any hint of when the limit resets cools the account this long.
const DEFAULT_RATE_COOLDOWN: Duration = Duration::from_secs(30);
/// The first auth-failure cooldown; it doubles with each failure in a row.
const AUTH_COOLDOWN_FIRST: Duration = Duration::from_secs(60);
/// The longest auth-failure cooldown.
const AUTH_COOLDOWN_MAX: Duration = Duration::from_secs(30 * 60);

/// How an account proves itself upstream.
pub enum Credential {
    /// Nothing (a local server).
    None,
    /// An API key, sent as the backend's [`AuthScheme`] says.
    Key(SecretString),
    /// An OAuth access token, refreshed as needed, always sent as a bearer token.
    OAuth(Arc<TokenSource>),
}

impl std::fmt::Debug for Credential {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Credential::None => "None",
            Credential::Key(_) => "Key(***)",
            Credential::OAuth(_) => "OAuth(***)",
        })
    }
}

/// Something an operator should know about an account (the server writes these to the
/// audit log). Never carries a credential.
#[derive(Debug, Clone)]
pub struct AccountEvent {
    /// The backend.
    pub backend: String,
    /// The account.
    pub account: String,
    /// What happened: `account.auth_failed`, `account.oauth_refresh_failed`.
    pub action: &'static str,
    /// Details (status, cooldown).
    pub detail: Vec<(&'static str, Value)>,
}

/// Where [`AccountEvent`]s go.
pub trait PoolEvents: Send + Sync {
    /// One event.
    fn account_event(&self, event: AccountEvent);
}

/// Why an account is cooling down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cooldown {
    /// A 429.
    RateLimited,
    /// A 401 or 403, or a failed OAuth refresh.
    Auth,
}

impl Cooldown {
    fn as_str(self) -> &'static str {
        match self {
            Cooldown::RateLimited => "rate_limited",
            Cooldown::Auth => "auth",
        }
    }
}

#[derive(Debug, Default)]
struct AccountState {
    headroom: Headroom,
    cooldown: Option<(Instant, Cooldown)>,
    auth_failures: u32,
    errors: u64,
    last_error: Option<&'static str>,
}

/// One account of a pool.
#[derive(Debug)]
pub struct Account {
    name: String,
    credential: Credential,
    state: Mutex<AccountState>,
    in_flight: AtomicU32,
    requests: AtomicU64,
}

/// What an attempt learned about its account, for the caller to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Nothing special.
    Fine,
    /// The account cools down; another account may serve the request.
    TryAnother,
}

/// An account in use by one request: counted in flight until dropped.
#[derive(Debug)]
pub struct InUse {
    account: Arc<Account>,
}

impl Drop for InUse {
    fn drop(&mut self) {
        self.account.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl std::ops::Deref for InUse {
    type Target = Account;
    fn deref(&self) -> &Account {
        &self.account
    }
}

impl Account {
    /// An account named `name`.
    pub fn new(name: impl Into<String>, credential: Credential) -> Self {
        Self {
            name: name.into(),
            credential,
            state: Mutex::new(AccountState::default()),
            in_flight: AtomicU32::new(0),
            requests: AtomicU64::new(0),
        }
    }

    /// The account's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    fn state(&self) -> std::sync::MutexGuard<'_, AccountState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The credential to send now and how (an OAuth token is refreshed first when near
    /// its expiry; concurrent callers share one refresh).
    pub async fn credential(
        &self,
        scheme: AuthScheme,
    ) -> Result<Option<(SecretString, AuthScheme)>, ApiError> {
        match &self.credential {
            Credential::None => Ok(None),
            Credential::Key(k) => Ok(Some((k.clone(), scheme))),
            Credential::OAuth(source) => match source.access_token().await {
                Ok(token) => Ok(Some((token, AuthScheme::Bearer))),
                Err(e) => {
                    self.failed_auth(Instant::now());
                    self.state().last_error = Some("oauth_refresh_failed");
                    tracing::warn!(account = %self.name, error = %e, "OAuth token refresh failed");
                    Err(ApiError::upstream(format!(
                        "account {:?} could not refresh its OAuth token; see `moat account check`",
                        self.name
                    )))
                }
            },
        }
    }

    /// The OAuth token source, for an OAuth account.
    pub fn oauth(&self) -> Option<&Arc<TokenSource>> {
        match &self.credential {
            Credential::OAuth(s) => Some(s),
            _ => None,
        }
    }

    /// When the account can be used again, if not now.
    fn unavailable_until(&self, now: Instant) -> Option<Instant> {
        let s = self.state();
        let cooling = s.cooldown.map(|(until, _)| until).filter(|u| *u > now);
        match (cooling, s.headroom.spent_until(now)) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }

    /// Learns from an upstream answer with `status` and `headers`.
    pub fn observe(&self, status: StatusCode, headers: &HeaderMap, now: Instant) -> Verdict {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state();
        s.headroom.update(headers, now);
        if status.is_success() {
            s.auth_failures = 0;
            return Verdict::Fine;
        }
        s.errors += 1;
        match status {
            StatusCode::TOO_MANY_REQUESTS => {
                let until = headroom::retry_after(headers, now)
                    .or_else(|| s.headroom.spent_until(now))
                    .or_else(|| s.headroom.next_reset(now))
                    .unwrap_or(now + DEFAULT_RATE_COOLDOWN);
                // A late 429 from a request sent earlier does not shorten a longer wait.
                match s.cooldown {
                    Some((longer, kind)) if longer > until => s.cooldown = Some((longer, kind)),
                    _ => s.cooldown = Some((until, Cooldown::RateLimited)),
                }
                s.last_error = Some("rate_limited");
                Verdict::TryAnother
            }
            StatusCode::UNAUTHORIZED => {
                drop(s);
                self.failed_auth(now);
                self.state().last_error = Some("auth");
                Verdict::TryAnother
            }
            // A refusal of this request (a model the key may not use, a region), not of
            // the key: another account may serve it, and this one stays in the pool.
            StatusCode::FORBIDDEN => {
                s.last_error = Some("forbidden");
                Verdict::TryAnother
            }
            s5 if s5.is_server_error() => {
                s.last_error = Some("upstream_5xx");
                Verdict::Fine
            }
            _ => {
                s.last_error = Some("upstream_4xx");
                Verdict::Fine
            }
        }
    }

    /// An exchange that got no answer (`connect`, `timeout`, `broken`).
    pub fn failed(&self, class: &'static str) {
        self.requests.fetch_add(1, Ordering::Relaxed);
        let mut s = self.state();
        s.errors += 1;
        s.last_error = Some(class);
    }

    /// Cools the account for an auth failure: one minute, doubling, at most thirty.
    /// Requests already in flight that fail during the cooldown count once: the wait
    /// doubles per failure after a cooldown, not per answer. Returns the cooldown.
    fn failed_auth(&self, now: Instant) -> Duration {
        let mut s = self.state();
        if let Some((until, Cooldown::Auth)) = s.cooldown
            && until > now
        {
            return until - now;
        }
        s.auth_failures = s.auth_failures.saturating_add(1);
        let wait = AUTH_COOLDOWN_FIRST
            .saturating_mul(1 << (s.auth_failures - 1).min(10))
            .min(AUTH_COOLDOWN_MAX);
        s.cooldown = Some((now + wait, Cooldown::Auth));
        wait
    }

    /// The current auth-failure cooldown, for the audit entry.
    pub fn auth_cooldown(&self, now: Instant) -> Option<Duration> {
        match self.state().cooldown {
            Some((until, Cooldown::Auth)) if until > now => Some(until - now),
            _ => None,
        }
    }

    /// The share of its limits left (0 to 1) and the tokens left with their reset.
    pub fn headroom(&self) -> Headroom {
        self.state().headroom
    }

    /// Headroom share, cooldown left (seconds, 0 when none) and requests in flight: the
    /// account's live gauges.
    pub fn gauges(&self, now: Instant) -> (f64, f64, u32) {
        let s = self.state();
        let cooldown = s.cooldown.map_or(0.0, |(until, _)| {
            until.saturating_duration_since(now).as_secs_f64()
        });
        (
            s.headroom.fraction(now),
            cooldown,
            self.in_flight.load(Ordering::Relaxed),
        )
    }

    /// Status for `/accounts`: never the credential.
    pub fn status(&self, now: Instant) -> Value {
        let s = self.state();
        let limits: serde_json::Map<String, Value> = s
            .headroom
            .dims()
            .map(|(kind, d)| {
                (
                    kind.as_str().to_string(),
                    json!({
                        "limit": d.limit,
                        "remaining": d.remaining,
                        "reset_in_secs": d.reset.map(|r| r.saturating_duration_since(now).as_secs_f64()),
                    }),
                )
            })
            .collect();
        let cooldown = s.cooldown.filter(|(until, _)| *until > now);
        let spent = s.headroom.spent_until(now);
        let state = match (cooldown, spent) {
            (Some((_, c)), _) => c.as_str(),
            (None, Some(_)) => "spent",
            (None, None) => "ok",
        };
        let mut v = json!({
            "name": self.name,
            "credential": match &self.credential {
                Credential::None => "none",
                Credential::Key(_) => "key",
                Credential::OAuth(_) => "oauth",
            },
            "status": state,
            "headroom": s.headroom.fraction(now),
            "limits": limits,
            "cooldown_secs": cooldown.map(|(u, _)| u.saturating_duration_since(now).as_secs_f64()),
            "requests": self.requests.load(Ordering::Relaxed),
            "errors": s.errors,
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "last_error": s.last_error,
        });
        drop(s);
        if let Credential::OAuth(source) = &self.credential {
            v["oauth"] = source.status();
        }
        v
    }
}

/// The accounts behind one backend.
#[derive(Debug)]
pub struct Pool {
    accounts: Vec<Arc<Account>>,
    strategy: Strategy,
    next: AtomicUsize,
    sticky: Mutex<StickyTable>,
    waiting: AtomicU32,
    config: PoolConfig,
}

/// No account can take the request now: 429, `Retry-After` at the earliest return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exhausted {
    /// When the first account is usable again, if known.
    pub until: Option<Instant>,
}

impl Exhausted {
    /// The client's error: 429 with `Retry-After`.
    pub fn error(self, backend: &str, now: Instant) -> ApiError {
        let secs = self
            .until
            .map_or(60, |u| {
                u.saturating_duration_since(now).as_secs_f64().ceil() as u32
            })
            .max(1);
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "every account of backend {backend:?} is rate-limited or cooling down; retry in {secs} s"
            ),
        );
        e.retry_after = Some(secs);
        e
    }
}

impl Pool {
    /// A pool of `accounts` (at least one) shared by `strategy`.
    pub fn new(accounts: Vec<Account>, strategy: Strategy, config: PoolConfig) -> Self {
        Self {
            accounts: accounts.into_iter().map(Arc::new).collect(),
            strategy,
            next: AtomicUsize::new(0),
            sticky: Mutex::new(StickyTable::new(config.sticky_max, config.sticky_idle)),
            waiting: AtomicU32::new(0),
            config,
        }
    }

    /// The accounts, in config order.
    pub fn accounts(&self) -> &[Arc<Account>] {
        &self.accounts
    }

    /// How accounts are chosen.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Whether choosing among accounts matters (more than one).
    pub fn is_shared(&self) -> bool {
        self.accounts.len() > 1
    }

    fn sticky(&self) -> std::sync::MutexGuard<'_, StickyTable> {
        self.sticky
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Picks an account for a request of `conversation` that has not yet tried those in
    /// `tried` (indices), without waiting; `Err` carries the earliest return.
    pub fn pick_now(
        &self,
        conversation: Option<u64>,
        tried: &[usize],
        now: Instant,
    ) -> Result<usize, Exhausted> {
        let usable: Vec<usize> = (0..self.accounts.len())
            .filter(|i| !tried.contains(i) && self.accounts[*i].unavailable_until(now).is_none())
            .collect();
        if usable.is_empty() {
            let until = self
                .accounts
                .iter()
                .filter_map(|a| a.unavailable_until(now))
                .min();
            return Err(Exhausted { until });
        }
        // One statement: the table's lock is released before it is taken again below.
        let stuck = conversation.and_then(|c| self.sticky().get(c, now));
        if let (Some(c), Some(i)) = (conversation, stuck)
            && usable.contains(&i)
            && self.accounts[i].headroom().fraction(now) > 0.0
        {
            self.sticky().set(c, i, now);
            return Ok(i);
        }
        let chosen = match self.strategy {
            Strategy::FillFirst => usable[0],
            Strategy::RoundRobin => {
                let n = self.next.fetch_add(1, Ordering::Relaxed);
                usable[n % usable.len()]
            }
            Strategy::MostHeadroom => {
                // Equal headroom (often: nothing known yet) goes round-robin, fewer
                // requests in flight first.
                let start = self.next.fetch_add(1, Ordering::Relaxed);
                let score = |i: usize| {
                    let a = &self.accounts[i];
                    (
                        a.headroom().fraction(now),
                        std::cmp::Reverse(a.in_flight.load(Ordering::Relaxed)),
                    )
                };
                let mut best = usable[start % usable.len()];
                let mut best_score = score(best);
                for &i in &usable {
                    let s = score(i);
                    if s.0 > best_score.0 || (s.0 == best_score.0 && s.1 > best_score.1) {
                        best = i;
                        best_score = s;
                    }
                }
                best
            }
        };
        if let Some(c) = conversation {
            self.sticky().set(c, chosen, now);
        }
        Ok(chosen)
    }

    /// Picks an account, waiting (when `may_wait`) in the bounded queue for at most
    /// `llm.pools.exhausted_wait` when none is usable.
    pub async fn pick(
        &self,
        conversation: Option<u64>,
        tried: &[usize],
        may_wait: bool,
    ) -> Result<(usize, InUse), Exhausted> {
        let now = Instant::now();
        let take = |i: usize| {
            let account = self.accounts[i].clone();
            account.in_flight.fetch_add(1, Ordering::AcqRel);
            (i, InUse { account })
        };
        let exhausted = match self.pick_now(conversation, tried, now) {
            Ok(i) => return Ok(take(i)),
            Err(e) => e,
        };
        let deadline = now + self.config.exhausted_wait;
        let worth_waiting = exhausted.until.is_some_and(|u| u <= deadline);
        if !may_wait || !worth_waiting {
            return Err(exhausted);
        }
        let Some(_place) = QueuePlace::take(&self.waiting, self.config.exhausted_queue) else {
            return Err(exhausted);
        };
        let mut until = exhausted.until;
        while let Some(u) = until.filter(|u| *u <= deadline) {
            tokio::time::sleep_until(u.into()).await;
            // After the wait every account is worth another try.
            match self.pick_now(conversation, &[], Instant::now()) {
                Ok(i) => return Ok(take(i)),
                Err(e) => until = e.until,
            }
        }
        Err(Exhausted { until })
    }

    /// Conversations remembered for stickiness.
    pub fn sticky_len(&self) -> usize {
        self.sticky().len()
    }
}

/// A place in a bounded wait queue, given back on drop.
pub(crate) struct QueuePlace<'a>(&'a AtomicU32);

impl<'a> QueuePlace<'a> {
    pub(crate) fn take(waiting: &'a AtomicU32, max: u32) -> Option<Self> {
        waiting
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .ok()
            .map(|_| Self(waiting))
    }
}

impl Drop for QueuePlace<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pool(n: usize, strategy: Strategy) -> Pool {
        let accounts = (0..n)
            .map(|i| Account::new(format!("a{i}"), Credential::None))
            .collect();
        Pool::new(accounts, strategy, PoolConfig::default())
    }

    fn limits(remaining: u64, limit: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-ratelimit-limit-requests", limit.into());
        h.insert("x-ratelimit-remaining-requests", remaining.into());
        h.insert("x-ratelimit-reset-requests", "30s".parse().unwrap());
        h
    }

    #[test]
    fn most_headroom_wins() {
        let p = pool(3, Strategy::MostHeadroom);
        let now = Instant::now();
        p.accounts[0].observe(StatusCode::OK, &limits(10, 100), now);
        p.accounts[1].observe(StatusCode::OK, &limits(90, 100), now);
        p.accounts[2].observe(StatusCode::OK, &limits(50, 100), now);
        for _ in 0..5 {
            assert_eq!(p.pick_now(None, &[], now), Ok(1));
        }
        assert_eq!(p.pick_now(None, &[1], now), Ok(2));
    }

    #[test]
    fn round_robin_and_fill_first() {
        let p = pool(3, Strategy::RoundRobin);
        let now = Instant::now();
        let picks: Vec<usize> = (0..6)
            .map(|_| p.pick_now(None, &[], now).unwrap())
            .collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
        let f = pool(3, Strategy::FillFirst);
        assert_eq!(f.pick_now(None, &[], now), Ok(0));
        f.accounts[0].observe(StatusCode::OK, &limits(0, 100), now);
        assert_eq!(f.pick_now(None, &[], now), Ok(1));
    }

    #[test]
    fn a_429_cools_until_retry_after_and_auth_failures_back_off() {
        let p = pool(2, Strategy::FillFirst);
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("retry-after", "20".parse().unwrap());
        assert_eq!(
            p.accounts[0].observe(StatusCode::TOO_MANY_REQUESTS, &h, now),
            Verdict::TryAnother
        );
        assert_eq!(p.pick_now(None, &[], now), Ok(1));
        assert_eq!(p.pick_now(None, &[], now + Duration::from_secs(21)), Ok(0));
        let none = HeaderMap::new();
        let a = &p.accounts[1];
        let mut waits = Vec::new();
        let mut at = now;
        for _ in 0..7 {
            a.observe(StatusCode::UNAUTHORIZED, &none, at);
            // Eight requests that were in flight fail too: counted once.
            for _ in 0..8 {
                a.observe(StatusCode::UNAUTHORIZED, &none, at);
            }
            let wait = a.auth_cooldown(at).unwrap();
            waits.push(wait.as_secs());
            at += wait + Duration::from_secs(1);
        }
        assert_eq!(waits, vec![60, 120, 240, 480, 960, 1800, 1800]);
        a.observe(StatusCode::OK, &none, at);
        a.observe(StatusCode::UNAUTHORIZED, &none, at);
        assert_eq!(a.auth_cooldown(at).unwrap().as_secs(), 60);
        // A 403 refuses one request, not the key: no cooldown.
        let b = &p.accounts[0];
        let later = now + Duration::from_secs(30);
        assert_eq!(
            b.observe(StatusCode::FORBIDDEN, &none, later),
            Verdict::TryAnother
        );
        assert!(b.auth_cooldown(later).is_none());
        // A late 429 with a short Retry-After does not shorten a longer cooldown.
        let mut short = HeaderMap::new();
        short.insert("retry-after", "1".parse().unwrap());
        a.observe(StatusCode::TOO_MANY_REQUESTS, &short, at);
        assert_eq!(a.auth_cooldown(at).unwrap().as_secs(), 60);
    }

    #[test]
    fn exhausted_names_the_earliest_return() {
        let p = pool(2, Strategy::MostHeadroom);
        let now = Instant::now();
        let mut h = HeaderMap::new();
        h.insert("retry-after", "5".parse().unwrap());
        p.accounts[0].observe(StatusCode::TOO_MANY_REQUESTS, &h, now);
        h.insert("retry-after", "9".parse().unwrap());
        p.accounts[1].observe(StatusCode::TOO_MANY_REQUESTS, &h, now);
        let e = p.pick_now(None, &[], now).unwrap_err();
        assert_eq!(e.until, Some(now + Duration::from_secs(5)));
        let err = e.error("b", now);
        assert_eq!(err.status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(err.retry_after, Some(5));
    }

    #[test]
    fn a_conversation_stays_while_its_account_has_headroom() {
        let p = pool(3, Strategy::RoundRobin);
        let now = Instant::now();
        let first = p.pick_now(Some(42), &[], now).unwrap();
        for _ in 0..5 {
            assert_eq!(p.pick_now(Some(42), &[], now), Ok(first));
        }
        p.accounts[first].observe(StatusCode::OK, &limits(0, 100), now);
        let moved = p.pick_now(Some(42), &[], now).unwrap();
        assert_ne!(moved, first);
        assert_eq!(p.pick_now(Some(42), &[], now), Ok(moved));
    }

    #[tokio::test]
    async fn waits_for_the_earliest_reset_within_the_bound() {
        let mut config = PoolConfig {
            exhausted_wait: Duration::from_secs(5),
            ..PoolConfig::default()
        };
        let p = Pool::new(
            vec![Account::new("a", Credential::None)],
            Strategy::MostHeadroom,
            config.clone(),
        );
        let mut h = HeaderMap::new();
        h.insert("retry-after", "1".parse().unwrap());
        p.accounts[0].observe(StatusCode::TOO_MANY_REQUESTS, &h, Instant::now());
        let started = Instant::now();
        let (i, _use) = p.pick(None, &[0], true).await.unwrap();
        assert_eq!(i, 0);
        assert!(started.elapsed() >= Duration::from_millis(900));
        // Without waiting, or past the bound: at once.
        p.accounts[0].observe(StatusCode::TOO_MANY_REQUESTS, &h, Instant::now());
        assert!(p.pick(None, &[], false).await.is_err());
        config.exhausted_wait = Duration::ZERO;
        let q = Pool::new(
            vec![Account::new("a", Credential::None)],
            Strategy::MostHeadroom,
            config,
        );
        q.accounts[0].observe(StatusCode::TOO_MANY_REQUESTS, &h, Instant::now());
        let started = Instant::now();
        assert!(q.pick(None, &[], true).await.is_err());
        assert!(started.elapsed() < Duration::from_millis(500));
    }
}
