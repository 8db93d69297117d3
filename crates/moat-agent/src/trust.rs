//! Trust levels per domain, and the gate every tool call passes.
//!
//! A domain's level says what its tools may do: 0 none (not offered to the model),
//! 1 inform (read-only tools only), 2 suggest (each call waits for the owner), 3 act and
//! report (runs; the owner is told), 4 autonomous. Within a turn the level can only go
//! down: a denial, a failed call or a guard flag in that turn lowers it for the rest of
//! the turn, and a high-tier guard flag on any input of the turn makes every later call
//! wait for approval, whatever the level.

use std::collections::BTreeMap;

use moat_core::config::agent::{AgentConfig, DOMAINS};

/// A trust level, 0 (none) to 4 (autonomous).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Level(u8);

impl Level {
    /// Not offered.
    pub const NONE: Level = Level(0);
    /// Read-only tools only.
    pub const INFORM: Level = Level(1);
    /// Every call waits for the owner.
    pub const SUGGEST: Level = Level(2);
    /// Runs; the owner is told.
    pub const ACT: Level = Level(3);
    /// Runs.
    pub const AUTONOMOUS: Level = Level(4);

    /// The level `n`, if it is one (0-4).
    pub fn new(n: u8) -> Option<Level> {
        (n <= 4).then_some(Level(n))
    }

    /// Its number.
    pub fn get(self) -> u8 {
        self.0
    }

    /// Its name, as `moat trust show` prints it.
    pub fn name(self) -> &'static str {
        match self.0 {
            0 => "none",
            1 => "inform",
            2 => "suggest",
            3 => "act",
            _ => "autonomous",
        }
    }

    /// One level lower (none stays none).
    pub fn lower(self) -> Level {
        Level(self.0.saturating_sub(1))
    }
}

/// What a tool is, for the gate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolClass {
    /// Its trust domain (one of [`DOMAINS`]).
    pub domain: &'static str,
    /// Whether it only reads (a level-1 domain still offers it).
    pub read_only: bool,
}

/// The gate's answer for one tool call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run it.
    Run,
    /// Run it and tell the owner (level 3).
    RunAndReport,
    /// Ask the owner first; the reason says why.
    Ask(String),
    /// Refuse it; the reason says why (the model is told).
    Refuse(String),
}

/// The levels in force, per domain, with the ceilings they may not pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Levels {
    levels: BTreeMap<&'static str, Level>,
    ceilings: BTreeMap<&'static str, Level>,
}

impl Levels {
    /// The starting levels and ceilings from `[agent]` (1 and 3 for unnamed domains).
    pub fn from_config(config: &AgentConfig) -> Levels {
        let pick = |map: &BTreeMap<String, u8>, d: &str, default: Level| {
            map.get(d).and_then(|n| Level::new(*n)).unwrap_or(default)
        };
        Levels {
            levels: DOMAINS
                .iter()
                .map(|d| (*d, pick(&config.trust, d, Level::INFORM)))
                .collect(),
            ceilings: DOMAINS
                .iter()
                .map(|d| (*d, pick(&config.ceilings, d, Level::ACT)))
                .collect(),
        }
    }

    /// A domain's level (none for a domain moat does not know).
    pub fn level(&self, domain: &str) -> Level {
        self.levels.get(domain).copied().unwrap_or(Level::NONE)
    }

    /// A domain's ceiling.
    pub fn ceiling(&self, domain: &str) -> Level {
        self.ceilings.get(domain).copied().unwrap_or(Level::NONE)
    }

    /// Sets a domain's level, refusing one above its ceiling or an unknown domain.
    pub fn set(&mut self, domain: &str, level: Level) -> Result<(), String> {
        let Some(key) = DOMAINS.iter().find(|d| **d == domain) else {
            return Err(format!(
                "{domain:?} is not a trust domain; use one of {}",
                DOMAINS.join(", ")
            ));
        };
        let ceiling = self.ceiling(domain);
        if level > ceiling {
            return Err(format!(
                "{domain} may not go above level {} ({}); raise agent.ceilings.{domain} in the config first",
                ceiling.get(),
                ceiling.name()
            ));
        }
        self.levels.insert(key, level);
        Ok(())
    }

    /// Every domain with its level and ceiling.
    pub fn all(&self) -> impl Iterator<Item = (&'static str, Level, Level)> + '_ {
        self.levels.iter().map(|(d, l)| (*d, *l, self.ceiling(d)))
    }
}

/// The levels as one turn sees them: they only go down while it runs.
#[derive(Debug, Clone)]
pub struct TurnTrust {
    levels: Levels,
    /// A high-tier guard flag was raised on an input of this turn.
    flagged_high: bool,
}

impl TurnTrust {
    /// The turn starts at the levels in force.
    pub fn new(levels: Levels) -> TurnTrust {
        TurnTrust {
            levels,
            flagged_high: false,
        }
    }

    /// Whether a tool of `class` is offered to the model at all.
    pub fn offered(&self, class: &ToolClass) -> bool {
        let level = self.levels.level(class.domain);
        level >= Level::SUGGEST || (level == Level::INFORM && class.read_only)
    }

    /// The gate for one call of a tool of `class`.
    pub fn decide(&self, class: &ToolClass) -> Decision {
        let level = self.levels.level(class.domain);
        if level == Level::NONE || (level == Level::INFORM && !class.read_only) {
            return Decision::Refuse(format!(
                "the {} domain is at trust level {} ({}): this tool may not run",
                class.domain,
                level.get(),
                level.name()
            ));
        }
        if self.flagged_high {
            return Decision::Ask(
                "an input of this turn was flagged as a likely prompt injection".into(),
            );
        }
        match level {
            l if l == Level::INFORM => Decision::Run,
            l if l == Level::SUGGEST => Decision::Ask(format!(
                "the {} domain is at level 2 (suggest): each call waits for you",
                class.domain
            )),
            l if l == Level::ACT => Decision::RunAndReport,
            _ => Decision::Run,
        }
    }

    /// Lowers `domain` by one for the rest of the turn (a denial, a failure).
    pub fn demote(&mut self, domain: &str) {
        let lower = self.levels.level(domain).lower();
        // Lowering never passes a ceiling, so this cannot fail for a known domain.
        let _ = self.levels.set(domain, lower);
    }

    /// A guard flag on an input of the turn: a high one makes every later call wait for
    /// approval; any flag lowers `domain` (the tool whose output it was, if any).
    pub fn flagged(&mut self, high: bool, domain: Option<&str>) {
        self.flagged_high |= high;
        if let Some(d) = domain {
            self.demote(d);
        }
    }

    /// The levels as they stand.
    pub fn levels(&self) -> &Levels {
        &self.levels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn levels(pairs: &[(&str, u8)]) -> Levels {
        let mut config = AgentConfig::default();
        for (d, n) in pairs {
            config.trust.insert((*d).into(), *n);
        }
        config.ceilings.insert("shell".into(), 4);
        Levels::from_config(&config)
    }

    const SHELL: ToolClass = ToolClass {
        domain: "shell",
        read_only: false,
    };
    const READ: ToolClass = ToolClass {
        domain: "files",
        read_only: true,
    };
    const WRITE: ToolClass = ToolClass {
        domain: "files",
        read_only: false,
    };

    #[test]
    fn each_level_gates_as_documented() {
        let t = TurnTrust::new(levels(&[("shell", 0), ("files", 1)]));
        assert!(!t.offered(&SHELL));
        assert!(t.offered(&READ) && !t.offered(&WRITE));
        assert!(matches!(t.decide(&SHELL), Decision::Refuse(_)));
        assert_eq!(t.decide(&READ), Decision::Run);
        for (n, want) in [(2, "ask"), (3, "report"), (4, "run")] {
            let t = TurnTrust::new(levels(&[("shell", n)]));
            let got = match t.decide(&SHELL) {
                Decision::Ask(_) => "ask",
                Decision::RunAndReport => "report",
                Decision::Run => "run",
                Decision::Refuse(_) => "refuse",
            };
            assert_eq!(got, want, "level {n}");
        }
    }

    #[test]
    fn a_high_flag_makes_every_later_call_wait_and_demotion_only_lowers() {
        let mut t = TurnTrust::new(levels(&[("shell", 4), ("files", 3)]));
        t.flagged(true, Some("files"));
        assert!(matches!(t.decide(&SHELL), Decision::Ask(_)));
        assert_eq!(t.levels().level("files"), Level::SUGGEST);
        t.demote("files");
        t.demote("files");
        t.demote("files");
        assert_eq!(t.levels().level("files"), Level::NONE);
    }

    #[test]
    fn a_level_above_its_ceiling_or_an_unknown_domain_is_refused() {
        let mut l = levels(&[]);
        assert!(l.set("files", Level::AUTONOMOUS).is_err());
        assert!(l.set("files", Level::ACT).is_ok());
        assert!(l.set("kitchen", Level::ACT).is_err());
    }
}
