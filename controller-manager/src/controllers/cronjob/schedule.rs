//! Cron schedules as upstream parses them (robfig/cron's standard parser, which
//! kube-controller-manager uses): five fields `minute hour day-of-month month day-of-week`
//! with lists, ranges, steps, month and weekday names, `?`, and the descriptors `@yearly`,
//! `@annually`, `@monthly`, `@weekly`, `@daily`, `@midnight`, `@hourly`, `@every <duration>`.
//! Times are computed in the CronJob's `spec.timeZone` (IANA, bundled tzdata as upstream
//! embeds Go's), UTC when unset. A `TZ=`/`CRON_TZ=` prefix is refused: upstream's validation
//! sends users to `spec.timeZone` instead.

use std::time::Duration;

use jiff::civil::{Date, DateTime, Time};
use jiff::tz::{AmbiguousOffset, TimeZone};
use jiff::{Timestamp, ToSpan};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("expected exactly 5 fields, found {0}: {1}")]
    FieldCount(usize, String),
    #[error("unrecognized descriptor: {0}")]
    Descriptor(String),
    #[error("failed to parse duration {0}: {1}")]
    Duration(String, String),
    #[error("failed to parse int from {0}")]
    Int(String),
    #[error("too many hyphens: {0}")]
    Hyphens(String),
    #[error("too many slashes: {0}")]
    Slashes(String),
    #[error("beginning of range ({0}) below minimum ({1}): {2}")]
    BelowMin(u32, u32, String),
    #[error("end of range ({0}) above maximum ({1}): {2}")]
    AboveMax(u32, u32, String),
    #[error("beginning of range ({0}) beyond end of range ({1}): {2}")]
    Inverted(u32, u32, String),
    #[error("step of range should be a positive number: {0}")]
    Step(String),
    #[error("cannot use TZ or CRON_TZ in schedule, use timeZone field instead")]
    TimeZonePrefix,
    #[error("unknown time zone {0}")]
    TimeZone(String),
}

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Schedule {
    Cron(Fields),
    /// `@every`: a constant delay, whole seconds, at least one.
    Every(Duration),
}

/// One bit per allowed value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fields {
    minute: u64,
    hour: u64,
    dom: u64,
    month: u64,
    dow: u64,
    /// upstream: a day matches if both day fields match when either is `*`/`?`, else if either does.
    dom_star: bool,
    dow_star: bool,
}

struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds { min: 0, max: 59, names: &[] };
const HOUR: Bounds = Bounds { min: 0, max: 23, names: &[] };
const DOM: Bounds = Bounds { min: 1, max: 31, names: &[] };
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"],
};
const DOW: Bounds = Bounds { min: 0, max: 6, names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"] };

/// Parses `spec` as upstream's `cron.ParseStandard`.
pub fn parse(spec: &str) -> Result<Schedule, ParseError> {
    let spec = spec.trim();
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        return Err(ParseError::TimeZonePrefix);
    }
    if let Some(d) = spec.strip_prefix('@') {
        let expanded = match d {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            _ => {
                let Some(every) = d.strip_prefix("every ") else {
                    return Err(ParseError::Descriptor(spec.into()));
                };
                let every = every.trim();
                let d = crate::parse_duration(every).map_err(|e| ParseError::Duration(every.into(), e))?;
                // upstream: constant delays are whole seconds, at least one.
                return Ok(Schedule::Every(Duration::from_secs(d.as_secs().max(1))));
            }
        };
        return parse(expanded);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(ParseError::FieldCount(fields.len(), spec.into()));
    }
    let (minute, _) = field(fields[0], &MINUTE)?;
    let (hour, _) = field(fields[1], &HOUR)?;
    let (dom, dom_star) = field(fields[2], &DOM)?;
    let (month, _) = field(fields[3], &MONTH)?;
    let (dow, dow_star) = field(fields[4], &DOW)?;
    Ok(Schedule::Cron(Fields { minute, hour, dom, month, dow, dom_star, dow_star }))
}

/// A comma-separated list of ranges; the bool says the field was a bare `*` or `?`.
fn field(f: &str, b: &Bounds) -> Result<(u64, bool), ParseError> {
    let mut bits = 0;
    let mut star = false;
    for r in f.split(',') {
        let (b2, s) = range(r, b)?;
        bits |= b2;
        star |= s;
    }
    Ok((bits, star))
}

fn range(r: &str, b: &Bounds) -> Result<(u64, bool), ParseError> {
    let parts: Vec<&str> = r.split('/').collect();
    let bounds: Vec<&str> = parts[0].split('-').collect();
    let (mut start, mut end, mut star) = if bounds[0] == "*" || bounds[0] == "?" {
        (b.min, b.max, true)
    } else {
        let start = value(bounds[0], b)?;
        let end = match bounds.len() {
            1 => start,
            2 => value(bounds[1], b)?,
            _ => return Err(ParseError::Hyphens(r.into())),
        };
        (start, end, false)
    };
    let step = match parts.len() {
        1 => 1,
        2 => {
            let step = parts[1].parse::<u32>().map_err(|_| ParseError::Int(parts[1].into()))?;
            // upstream: `N/step` means N through the maximum.
            if bounds.len() == 1 && !star {
                end = b.max;
            }
            if step > 1 {
                star = false;
            }
            step
        }
        _ => return Err(ParseError::Slashes(r.into())),
    };
    if start < b.min {
        return Err(ParseError::BelowMin(start, b.min, r.into()));
    }
    if end > b.max {
        return Err(ParseError::AboveMax(end, b.max, r.into()));
    }
    if start > end {
        return Err(ParseError::Inverted(start, end, r.into()));
    }
    if step == 0 {
        return Err(ParseError::Step(r.into()));
    }
    let mut bits = 0;
    while start <= end {
        bits |= 1 << start;
        start += step;
    }
    Ok((bits, star))
}

fn value(s: &str, b: &Bounds) -> Result<u32, ParseError> {
    let lower = s.to_ascii_lowercase();
    if let Some(i) = b.names.iter().position(|n| *n == lower) {
        return Ok(i as u32 + b.min);
    }
    s.parse::<u32>().map_err(|_| ParseError::Int(s.into()))
}

/// `spec.timeZone` (IANA name) or UTC.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, ParseError> {
    match name {
        None => Ok(TimeZone::UTC),
        Some(n) => TimeZone::get(n).map_err(|_| ParseError::TimeZone(n.into())),
    }
}

fn has(bits: u64, v: i8) -> bool {
    bits & (1 << v) != 0
}

impl Fields {
    fn day_matches(&self, d: Date) -> bool {
        let dom = has(self.dom, d.day());
        let dow = has(self.dow, d.weekday().to_sunday_zero_offset());
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }
}

impl Schedule {
    /// The first activation strictly after `t`, in `tz`; `None` if there is none within five
    /// years (upstream's limit; e.g. `0 0 30 2 *`).
    pub fn next(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let f = match self {
            Schedule::Every(d) => {
                // upstream: the next whole second `d` after t.
                let secs = t.as_second() + d.as_secs() as i64;
                return Timestamp::from_second(secs).ok();
            }
            Schedule::Cron(f) => f,
        };
        let local = t.to_zoned(tz.clone()).datetime();
        let mut cur = DateTime::from_parts(local.date(), Time::new(local.hour(), local.minute(), 0, 0).ok()?)
            .checked_add(1.minute())
            .ok()?;
        let limit = cur.year() + 5;
        while cur.year() <= limit {
            if !has(f.month, cur.month()) {
                cur = DateTime::from_parts(cur.date().first_of_month().checked_add(1.month()).ok()?, Time::midnight());
                continue;
            }
            if !f.day_matches(cur.date()) {
                cur = DateTime::from_parts(cur.date().tomorrow().ok()?, Time::midnight());
                continue;
            }
            if !has(f.hour, cur.hour()) {
                cur = DateTime::from_parts(cur.date(), Time::new(cur.hour(), 0, 0, 0).ok()?)
                    .checked_add(1.hour())
                    .ok()?;
                continue;
            }
            if !has(f.minute, cur.minute()) {
                cur = cur.checked_add(1.minute()).ok()?;
                continue;
            }
            // A local time skipped by a DST jump does not happen; a repeated one happens once.
            let candidates = match tz.to_ambiguous_timestamp(cur).offset() {
                AmbiguousOffset::Unambiguous { offset } => vec![offset],
                AmbiguousOffset::Fold { before, after } => vec![before, after],
                AmbiguousOffset::Gap { .. } => vec![],
            };
            for off in candidates {
                if let Ok(ts) = off.to_timestamp(cur) {
                    if ts > t {
                        return Some(ts);
                    }
                }
            }
            cur = cur.checked_add(1.minute()).ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().expect("timestamp")
    }

    fn next_utc(spec: &str, from: &str) -> Option<String> {
        parse(spec).expect("valid").next(ts(from), &TimeZone::UTC).map(|t| t.to_string())
    }

    #[test]
    fn standard_fields_lists_ranges_steps_and_names() {
        let cases = [
            ("*/15 * * * *", "2026-03-10T10:07:30Z", "2026-03-10T10:15:00Z"),
            ("* * * * *", "2026-03-10T10:07:00Z", "2026-03-10T10:08:00Z"),
            ("5,10-12 * * * *", "2026-03-10T10:10:00Z", "2026-03-10T10:11:00Z"),
            ("5,10-12 * * * *", "2026-03-10T10:12:00Z", "2026-03-10T11:05:00Z"),
            ("10/20 * * * *", "2026-03-10T10:31:00Z", "2026-03-10T10:50:00Z"),
            ("0 9 * * mon-fri", "2026-03-13T10:00:00Z", "2026-03-16T09:00:00Z"),
            ("0 0 1 JAN,jul ?", "2026-03-10T00:00:00Z", "2026-07-01T00:00:00Z"),
            ("0 0 29 2 *", "2026-03-10T00:00:00Z", "2028-02-29T00:00:00Z"),
            ("30 2 * * 0", "2026-03-10T00:00:00Z", "2026-03-15T02:30:00Z"),
        ];
        for (spec, from, want) in cases {
            assert_eq!(next_utc(spec, from).as_deref(), Some(want), "{spec} after {from}");
        }
    }

    #[test]
    fn day_of_month_and_weekday_match_either_unless_one_is_a_star() {
        // 2026-03-10 is a Tuesday: "1st of the month or any Monday".
        assert_eq!(next_utc("0 0 1 * mon", "2026-03-10T00:00:00Z").as_deref(), Some("2026-03-16T00:00:00Z"));
        // `*/2` in day-of-month is not a star: either field may match.
        assert_eq!(next_utc("0 0 */2 * sun", "2026-03-10T00:00:00Z").as_deref(), Some("2026-03-11T00:00:00Z"));
        assert_eq!(next_utc("0 0 * * sun", "2026-03-10T00:00:00Z").as_deref(), Some("2026-03-15T00:00:00Z"));
    }

    #[test]
    fn descriptors_expand_as_upstream() {
        let from = "2026-03-10T10:07:00Z";
        assert_eq!(next_utc("@hourly", from).as_deref(), Some("2026-03-10T11:00:00Z"));
        assert_eq!(next_utc("@daily", from).as_deref(), Some("2026-03-11T00:00:00Z"));
        assert_eq!(next_utc("@midnight", from).as_deref(), Some("2026-03-11T00:00:00Z"));
        assert_eq!(next_utc("@weekly", from).as_deref(), Some("2026-03-15T00:00:00Z"));
        assert_eq!(next_utc("@monthly", from).as_deref(), Some("2026-04-01T00:00:00Z"));
        assert_eq!(next_utc("@yearly", from).as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(next_utc("@annually", from).as_deref(), Some("2027-01-01T00:00:00Z"));
        assert_eq!(next_utc("@every 90s", "2026-03-10T10:07:00.5Z").as_deref(), Some("2026-03-10T10:08:30Z"));
        assert_eq!(next_utc("@every 1h30m", from).as_deref(), Some("2026-03-10T11:37:00Z"));
    }

    #[test]
    fn invalid_schedules_are_refused_with_upstream_messages() {
        let err = |s: &str| parse(s).expect_err(s).to_string();
        assert_eq!(err("* * * *"), "expected exactly 5 fields, found 4: * * * *");
        assert_eq!(err("0 0 * * * *"), "expected exactly 5 fields, found 6: 0 0 * * * *");
        assert_eq!(err("60 * * * *"), "end of range (60) above maximum (59): 60");
        assert_eq!(err("0 0 0 * *"), "beginning of range (0) below minimum (1): 0");
        assert_eq!(err("5-1 * * * *"), "beginning of range (5) beyond end of range (1): 5-1");
        assert_eq!(err("*/0 * * * *"), "step of range should be a positive number: */0");
        assert_eq!(err("0 0 * foo *"), "failed to parse int from foo");
        assert_eq!(err("@fortnightly"), "unrecognized descriptor: @fortnightly");
        assert_eq!(err("TZ=UTC 0 * * * *"), "cannot use TZ or CRON_TZ in schedule, use timeZone field instead");
        assert!(parse("CRON_TZ=Europe/Paris 0 * * * *").is_err());
        assert!(time_zone(Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn impossible_dates_have_no_next_time() {
        assert_eq!(next_utc("59 23 31 2 *", "2026-03-10T00:00:00Z"), None);
    }

    #[test]
    fn time_zone_shifts_with_daylight_saving() {
        let tz = time_zone(Some("America/New_York")).expect("bundled tzdata");
        let s = parse("0 9 * * *").expect("valid");
        assert_eq!(s.next(ts("2026-01-10T00:00:00Z"), &tz), Some(ts("2026-01-10T14:00:00Z")));
        assert_eq!(s.next(ts("2026-07-10T00:00:00Z"), &tz), Some(ts("2026-07-10T13:00:00Z")));
        // 2026-03-08 02:30 does not exist in New York; 2026-11-01 01:30 happens once.
        let s = parse("30 2 * * *").expect("valid");
        assert_eq!(s.next(ts("2026-03-08T05:00:00Z"), &tz), Some(ts("2026-03-09T06:30:00Z")));
        let s = parse("30 1 * * *").expect("valid");
        assert_eq!(s.next(ts("2026-11-01T04:00:00Z"), &tz), Some(ts("2026-11-01T05:30:00Z")));
    }
}
