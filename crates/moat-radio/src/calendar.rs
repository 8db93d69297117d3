//! Calendars (iCalendar, RFC 5545) as the DJ reads them: the occurrences of their events
//! in a window of time, recurrences expanded (`RRULE`, `RDATE`, `EXDATE`, time zones by
//! `TZID`), cancelled events left out.
//!
//! A calendar may come from anywhere the owner points it, so parsing is bounded: the text
//! at most [`MAX_ICS_BYTES`], at most [`MAX_EVENTS`] events read, and each recurrence
//! expanded with the `rrule` crate's iteration limits on.

use chrono::{DateTime, Duration as Span, TimeZone, Utc};
use icalendar::{Calendar, Component, DatePerhapsTime};

/// The largest calendar read.
pub const MAX_ICS_BYTES: usize = 4 * 1024 * 1024;
/// Events read from one calendar at most.
pub const MAX_EVENTS: usize = 5000;
/// Occurrences kept from one event in a window at most.
const MAX_OCCURRENCES: u16 = 200;
/// Repetitions walked in one calendar at most (a daily event of twenty years is 7300).
const MAX_STEPS: u32 = 500_000;

/// One occurrence of an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occurrence {
    /// When it starts.
    pub start: DateTime<Utc>,
    /// When it ends (equal to `start` for an event without length).
    pub end: DateTime<Utc>,
    /// Its title, cleaned (no control characters, at most 120 characters).
    pub summary: String,
    /// Whether it lasts whole days.
    pub all_day: bool,
}

impl Occurrence {
    /// Whether `t` falls inside it.
    pub fn covers(&self, t: DateTime<Utc>) -> bool {
        self.start <= t && t < self.end
    }
}

/// The occurrences of `ics`'s events that overlap `[from, to)`, by start.
pub fn occurrences(
    ics: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Occurrence>, String> {
    if ics.len() > MAX_ICS_BYTES {
        return Err(format!(
            "the calendar is larger than {} MiB",
            MAX_ICS_BYTES / 1024 / 1024
        ));
    }
    if !ics.trim_start().starts_with("BEGIN:VCALENDAR") {
        return Err("not an iCalendar file (no BEGIN:VCALENDAR)".into());
    }
    let calendar: Calendar = ics
        .parse()
        .map_err(|e: String| format!("not a readable iCalendar file: {}", first_line(&e)))?;
    let mut out = Vec::new();
    let mut steps = 0u32;
    for event in calendar.calendar_events().take(MAX_EVENTS) {
        if event
            .property_value("STATUS")
            .is_some_and(|s| s.eq_ignore_ascii_case("CANCELLED"))
        {
            continue;
        }
        let Some(start) = event.get_start() else {
            continue;
        };
        let all_day = matches!(start, DatePerhapsTime::Date(_));
        let length = length_of(&event, &start, all_day);
        let summary = clean(event.get_summary().unwrap_or("(no title)"));
        // An event whose rule cannot be read is one event, not a failed calendar.
        let Ok(set) = event.get_recurrence() else {
            continue;
        };
        // The rule is walked from its start: a rule that repeats every second since
        // 1970 would take hours, so each event and the whole calendar have a budget of
        // steps, and what exceeds it is left out (and said).
        let mut kept = 0u16;
        for at in &set {
            steps += 1;
            if steps > MAX_STEPS {
                return Err(format!(
                    "its events repeat too often to read (more than {MAX_STEPS} repetitions before the window)"
                ));
            }
            let start = at.with_timezone(&Utc);
            if start >= to || kept >= MAX_OCCURRENCES {
                break;
            }
            let end = start + length;
            // An event that ended exactly at `from` is over.
            if end > from || (length.is_zero() && start >= from) {
                kept += 1;
                out.push(Occurrence {
                    start,
                    end,
                    summary: summary.clone(),
                    all_day,
                });
            }
        }
    }
    out.sort_by_key(|o| o.start);
    Ok(out)
}

/// How long an event lasts: `DTEND - DTSTART`, else `DURATION`, else a day for an
/// all-day event and nothing for a timed one (RFC 5545 §3.6.1).
fn length_of(event: &icalendar::Event, start: &DatePerhapsTime, all_day: bool) -> Span {
    let default = if all_day { Span::days(1) } else { Span::zero() };
    if let (Some(s), Some(e)) = (instant(start), event.get_end().as_ref().and_then(instant)) {
        let span = e - s;
        return if span < Span::zero() { default } else { span };
    }
    event
        .property_value("DURATION")
        .and_then(parse_duration)
        .unwrap_or(default)
}

/// A start or end as an instant (a date is its midnight, local time).
fn instant(d: &DatePerhapsTime) -> Option<DateTime<Utc>> {
    match d {
        DatePerhapsTime::DateTime(dt) => dt.try_into_utc().or_else(|| {
            // Floating times are the machine's local time.
            match dt {
                icalendar::CalendarDateTime::Floating(naive) => chrono::Local
                    .from_local_datetime(naive)
                    .earliest()
                    .map(|t| t.with_timezone(&Utc)),
                _ => None,
            }
        }),
        DatePerhapsTime::Date(date) => chrono::Local
            .from_local_datetime(&date.and_hms_opt(0, 0, 0)?)
            .earliest()
            .map(|t| t.with_timezone(&Utc)),
    }
}

/// An iCalendar duration (`PT1H30M`, `P1D`, `P2W`, `-PT5M` is refused).
fn parse_duration(s: &str) -> Option<Span> {
    let s = s.trim().strip_prefix('+').unwrap_or(s.trim());
    let rest = s.strip_prefix('P')?;
    let (days_part, time_part) = match rest.split_once('T') {
        Some((d, t)) => (d, Some(t)),
        None => (rest, None),
    };
    let mut total = Span::zero();
    let mut take = |text: &str, units: &[(char, i64)]| -> Option<()> {
        let mut number = String::new();
        for c in text.chars() {
            if c.is_ascii_digit() {
                number.push(c);
                continue;
            }
            let n: i64 = number.parse().ok()?;
            let secs = units.iter().find(|(u, _)| *u == c)?.1;
            total += Span::seconds(n.checked_mul(secs)?);
            number.clear();
        }
        number.is_empty().then_some(())
    };
    take(days_part, &[('W', 7 * 86_400), ('D', 86_400)])?;
    if let Some(t) = time_part {
        take(t, &[('H', 3600), ('M', 60), ('S', 1)])?;
    }
    Some(total)
}

fn clean(s: &str) -> String {
    s.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(120)
        .collect::<String>()
        .trim()
        .to_string()
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or("").chars().take(120).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    const ICS: &str = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n\
BEGIN:VEVENT\r\nUID:1\r\nDTSTART:20261207T150000Z\r\nDTEND:20261207T160000Z\r\nSUMMARY:Dentist\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:2\r\nDTSTART;TZID=Europe/Berlin:20261201T090000\r\nDURATION:PT30M\r\nRRULE:FREQ=DAILY;COUNT=30\r\nEXDATE;TZID=Europe/Berlin:20261208T090000\r\nSUMMARY:Stand-up\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:3\r\nDTSTART:20261207T100000Z\r\nDTEND:20261207T110000Z\r\nSTATUS:CANCELLED\r\nSUMMARY:Gone\r\nEND:VEVENT\r\n\
BEGIN:VEVENT\r\nUID:4\r\nDTSTART;VALUE=DATE:20261224\r\nSUMMARY:Holiday\r\nEND:VEVENT\r\n\
END:VCALENDAR\r\n";

    #[test]
    fn events_recur_in_their_time_zone_and_exceptions_and_cancellations_are_left_out() {
        let day = occurrences(ICS, at("2026-12-07T00:00:00Z"), at("2026-12-08T00:00:00Z")).unwrap();
        let names: Vec<_> = day.iter().map(|o| (o.summary.as_str(), o.start)).collect();
        // 09:00 in Berlin is 08:00 UTC in winter.
        assert_eq!(
            names,
            vec![
                ("Stand-up", at("2026-12-07T08:00:00Z")),
                ("Dentist", at("2026-12-07T15:00:00Z"))
            ]
        );
        assert_eq!(day[0].end - day[0].start, Span::minutes(30));
        assert!(day[1].covers(at("2026-12-07T15:30:00Z")));
        assert!(!day[1].covers(at("2026-12-07T16:00:00Z")));
        // The 8th is an exception.
        let next =
            occurrences(ICS, at("2026-12-08T00:00:00Z"), at("2026-12-09T00:00:00Z")).unwrap();
        assert!(next.is_empty(), "{next:?}");
        let xmas =
            occurrences(ICS, at("2026-12-24T12:00:00Z"), at("2026-12-24T13:00:00Z")).unwrap();
        assert!(
            xmas.iter().any(|o| o.summary == "Holiday" && o.all_day),
            "{xmas:?}"
        );
    }

    #[test]
    fn an_event_under_way_at_the_start_of_the_window_is_in_it() {
        let mid = occurrences(ICS, at("2026-12-07T15:30:00Z"), at("2026-12-07T15:31:00Z")).unwrap();
        assert_eq!(mid.len(), 1);
        assert_eq!(mid[0].summary, "Dentist");
    }

    #[test]
    fn what_is_not_a_calendar_is_refused_and_a_runaway_rule_is_bounded() {
        assert!(
            occurrences(
                "<html>",
                at("2026-12-07T00:00:00Z"),
                at("2026-12-08T00:00:00Z")
            )
            .is_err()
        );
        let huge = "x".repeat(MAX_ICS_BYTES + 1);
        assert!(
            occurrences(
                &huge,
                at("2026-12-07T00:00:00Z"),
                at("2026-12-08T00:00:00Z")
            )
            .is_err()
        );
        let secondly = "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:19700101T000000Z\r\nRRULE:FREQ=SECONDLY\r\nSUMMARY:Spam\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n";
        let started = std::time::Instant::now();
        let r = occurrences(
            secondly,
            at("2026-12-07T00:00:00Z"),
            at("2026-12-08T00:00:00Z"),
        );
        assert!(started.elapsed() < std::time::Duration::from_secs(10));
        assert!(
            r.map(|o| o.len() <= MAX_OCCURRENCES as usize)
                .unwrap_or(true)
        );
    }

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("PT1H30M"), Some(Span::minutes(90)));
        assert_eq!(parse_duration("P1D"), Some(Span::days(1)));
        assert_eq!(parse_duration("P1W"), Some(Span::days(7)));
        assert_eq!(parse_duration("P1DT2H"), Some(Span::hours(26)));
        assert_eq!(parse_duration("-PT5M"), None);
        assert_eq!(parse_duration("PT5"), None);
        assert_eq!(parse_duration("1H"), None);
    }
}
