//! The server's refusals (authentication, exposure, rate and size limits) as audit
//! entries, sampled so that a flood cannot flood the log: per action and client address,
//! at most one entry per [`WINDOW`]; the next entry says how many were left out, and
//! what is still counted at shutdown is written then.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use moat_audit::{AuditLog, Record};
use moat_net::{NetEvent, NetEvents};

/// The sampling window per action and address.
pub(crate) const WINDOW: Duration = Duration::from_secs(10);
/// Most (action, client) pairs tracked; past it, expired windows are dropped, and while
/// none has expired, new clients share one window (written as `api:0.0.0.0`).
const MAX_TRACKED: usize = 4096;

struct Window {
    started: Instant,
    suppressed: u64,
    last_path: String,
}

/// Records refusals in the audit log, sampled.
pub(crate) struct AuditEvents {
    log: AuditLog,
    windows: Mutex<HashMap<(&'static str, IpAddr), Window>>,
}

impl AuditEvents {
    /// Refusals go to `log`.
    pub(crate) fn new(log: AuditLog) -> Self {
        Self {
            log,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Writes the counts of refusals left out so far (at shutdown).
    pub(crate) fn flush_counts(&self) {
        let drained: Vec<_> = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .filter(|(_, w)| w.suppressed > 0)
            .collect();
        for ((action, ip), w) in drained {
            self.write(action, ip, &w.last_path, "refused", w.suppressed, None);
        }
    }

    fn write(
        &self,
        action: &str,
        ip: IpAddr,
        path: &str,
        outcome: &str,
        suppressed: u64,
        event: Option<&NetEvent<'_>>,
    ) {
        let mut record = Record::new(format!("api:{ip}"), action, path, outcome);
        if let Some(e) = event {
            record = record
                .detail("code", e.refused.code)
                .detail("method", e.method.as_str())
                .detail("status", e.status.as_u16());
        }
        if suppressed > 0 {
            record = record.detail("similar_since_last_entry", suppressed);
        }
        if let Err(e) = self.log.record(record) {
            tracing::error!("audit log: {e}");
        }
    }
}

impl NetEvents for AuditEvents {
    fn refused(&self, event: NetEvent<'_>) {
        // By client, not address: an IPv6 client rotating through its /64, or a local
        // program through 127/8, is one client.
        let mut ip = moat_net::client_key(event.peer.ip());
        let mut key = (event.refused.action, ip);
        let now = Instant::now();
        let suppressed = {
            let mut windows = self
                .windows
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if windows.len() >= MAX_TRACKED && !windows.contains_key(&key) {
                windows.retain(|_, w| now.duration_since(w.started) < WINDOW);
                if windows.len() >= MAX_TRACKED {
                    // Still full of live windows: every further client shares one.
                    ip = IpAddr::from([0, 0, 0, 0]);
                    key = (event.refused.action, ip);
                }
            }
            match windows.get_mut(&key) {
                Some(w) if now.duration_since(w.started) < WINDOW => {
                    w.suppressed += 1;
                    w.last_path.clear();
                    w.last_path.push_str(event.path);
                    return;
                }
                Some(w) => {
                    let n = w.suppressed;
                    w.started = now;
                    w.suppressed = 0;
                    n
                }
                None => {
                    windows.insert(
                        key,
                        Window {
                            started: now,
                            suppressed: 0,
                            last_path: String::new(),
                        },
                    );
                    0
                }
            }
        };
        self.write(
            event.refused.action,
            ip,
            event.path,
            "refused",
            suppressed,
            Some(&event),
        );
    }
}

/// Egress refusals are few (a model's or a channel's fetch), so each is written: who
/// asked, the origin refused (never its path or query) and the rule.
impl moat_net::egress::EgressEvents for AuditEvents {
    fn refused(&self, event: moat_net::egress::EgressEvent<'_>) {
        let record = Record::new(
            format!("egress:{}", event.session),
            "egress.refused",
            event.origin,
            "refused",
        )
        .detail("rule", event.refusal.rule());
        if let Err(e) = self.log.record(record) {
            tracing::error!("audit log: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use moat_audit::{AuditWriter, Options};
    use moat_net::egress::{EgressEvent, EgressEvents, Policy};

    use super::*;

    #[test]
    fn egress_refusals_are_audited_with_their_rule_and_no_path() {
        let dir = tempfile::tempdir().unwrap();
        let writer = AuditWriter::open(dir.path(), None, None, Options::default()).unwrap();
        let events = AuditEvents::new(writer.log());
        let refusal = Policy::default()
            .check_url("http://169.254.169.254/latest/meta-data/?token=sk-canary-1")
            .unwrap_err();
        EgressEvents::refused(
            &events,
            EgressEvent {
                session: "chat-1",
                origin: "http://169.254.169.254:80",
                refusal: &refusal,
            },
        );
        writer.close().unwrap();
        let mut all = String::new();
        for entry in std::fs::read_dir(dir.path()).unwrap() {
            let path = entry.unwrap().path();
            if path.is_file() {
                all.push_str(&String::from_utf8_lossy(&std::fs::read(path).unwrap()));
            }
        }
        assert!(all.contains("egress.refused"), "{all}");
        assert!(all.contains("egress:chat-1"), "{all}");
        assert!(all.contains("blocked-address:link-local"), "{all}");
        assert!(
            !all.contains("meta-data") && !all.contains("sk-canary"),
            "{all}"
        );
    }
}
