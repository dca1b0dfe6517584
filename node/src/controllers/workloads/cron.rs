//! Cron schedules as CronJobs spell them, read as Kubernetes reads them
//! (robfig/cron's standard parser): five fields — minute, hour, day of
//! month, month, day of week — each a `*` or `?`, a number or a name
//! (`jan`, `MON`), a range `a-b`, a step `*/n` or `a-b/n` or `a/n`, or a
//! comma-separated list of those; or a descriptor: `@yearly`
//! (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
//! `@hourly`, `@every <duration>`.
//!
//! As in cron, when both day fields are restricted a day matches either;
//! when one is `*` (or `?`, or `*/1`) both must match.
//!
//! Times are computed in the CronJob's `timeZone`: empty or `UTC` is UTC,
//! any other IANA name is read from the system's zoneinfo files.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use k8s_openapi::jiff::civil::{self, DateTime};
use k8s_openapi::jiff::tz::TimeZone;

/// Bit set when a field is `*`/`?`: the day fields combine differently.
const STAR: u64 = 1 << 63;

#[derive(Debug, Clone, Copy)]
struct Bounds {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const MINUTE: Bounds = Bounds {
    min: 0,
    max: 59,
    names: &[],
};
const HOUR: Bounds = Bounds {
    min: 0,
    max: 23,
    names: &[],
};
const DOM: Bounds = Bounds {
    min: 1,
    max: 31,
    names: &[],
};
const MONTH: Bounds = Bounds {
    min: 1,
    max: 12,
    names: &[
        "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
    ],
};
const DOW: Bounds = Bounds {
    min: 0,
    max: 6,
    names: &["sun", "mon", "tue", "wed", "thu", "fri", "sat"],
};

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Schedule {
    Fields {
        minute: u64,
        hour: u64,
        dom: u64,
        month: u64,
        dow: u64,
    },
    /// `@every`: a fixed delay from the previous time, in whole seconds.
    Every(Duration),
}

/// Parses a schedule; the error says what is wrong with which part.
pub fn parse(spec: &str) -> Result<Schedule, String> {
    let spec = spec.trim();
    if spec.is_empty() {
        return Err("empty spec string".into());
    }
    if spec.starts_with("TZ=") || spec.starts_with("CRON_TZ=") {
        return Err("cannot use TZ or CRON_TZ in schedule, use timeZone field instead".into());
    }
    if let Some(d) = spec.strip_prefix('@') {
        let fields = match d.to_ascii_lowercase().as_str() {
            "yearly" | "annually" => "0 0 1 1 *",
            "monthly" => "0 0 1 * *",
            "weekly" => "0 0 * * 0",
            "daily" | "midnight" => "0 0 * * *",
            "hourly" => "0 * * * *",
            other => {
                if let Some(every) = other.strip_prefix("every ") {
                    let d = parse_duration(every.trim())
                        .map_err(|e| format!("failed to parse duration {spec}: {e}"))?;
                    // Whole seconds, at least one (robfig's `Every`).
                    let secs = d.as_secs().max(1);
                    return Ok(Schedule::Every(Duration::from_secs(secs)));
                }
                return Err(format!("unrecognized descriptor: {spec}"));
            }
        };
        return parse(fields);
    }
    let fields: Vec<&str> = spec.split_whitespace().collect();
    if fields.len() != 5 {
        return Err(format!(
            "expected exactly 5 fields, found {}: {spec}",
            fields.len()
        ));
    }
    Ok(Schedule::Fields {
        minute: field(fields[0], MINUTE)?,
        hour: field(fields[1], HOUR)?,
        dom: field(fields[2], DOM)?,
        month: field(fields[3], MONTH)?,
        dow: field(fields[4], DOW)?,
    })
}

fn field(expr: &str, b: Bounds) -> Result<u64, String> {
    let mut bits = 0;
    for part in expr.split(',') {
        bits |= range(part, b)?;
    }
    Ok(bits)
}

fn number(s: &str, b: Bounds) -> Result<u32, String> {
    if let Some(i) = b.names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Ok(b.min + i as u32);
    }
    let n: i64 = s
        .parse()
        .map_err(|_| format!("failed to parse int from {s}"))?;
    if n < 0 {
        return Err(format!("negative number ({n}) not allowed: {s}"));
    }
    u32::try_from(n).map_err(|_| format!("failed to parse int from {s}"))
}

/// One `a`, `a-b`, `*`, with an optional `/step` (robfig's `getRange`).
fn range(expr: &str, b: Bounds) -> Result<u64, String> {
    let (span, step) = match expr.split('/').collect::<Vec<_>>()[..] {
        [span] => (span, None),
        [span, step] => (span, Some(step)),
        _ => return Err(format!("too many slashes: {expr}")),
    };
    let bounds: Vec<&str> = span.split('-').collect();
    let (mut start, mut end, mut extra) = if bounds[0] == "*" || bounds[0] == "?" {
        if bounds.len() > 1 {
            return Err(format!("too many hyphens: {expr}"));
        }
        (b.min, b.max, STAR)
    } else {
        let start = number(bounds[0], b)?;
        let end = match bounds.len() {
            1 => start,
            2 => number(bounds[1], b)?,
            _ => return Err(format!("too many hyphens: {expr}")),
        };
        (start, end, 0)
    };
    let step = match step {
        None => 1,
        Some(s) => {
            let s: i64 = s
                .parse()
                .map_err(|_| format!("failed to parse int from {s}"))?;
            // `a/n` means `a-max/n`.
            if bounds.len() == 1 {
                end = b.max;
            }
            if s > 1 {
                extra = 0;
            }
            if s <= 0 {
                return Err(format!("step of range should be a positive number: {expr}"));
            }
            s as u32
        }
    };
    if start < b.min {
        return Err(format!(
            "beginning of range ({start}) below minimum ({}): {expr}",
            b.min
        ));
    }
    if end > b.max {
        return Err(format!(
            "end of range ({end}) above maximum ({}): {expr}",
            b.max
        ));
    }
    if start > end {
        return Err(format!(
            "beginning of range ({start}) beyond end of range ({end}): {expr}"
        ));
    }
    let mut bits = extra;
    while start <= end {
        bits |= 1 << start;
        start += step;
    }
    Ok(bits)
}

/// A Go duration such as `1h30m`, `90s`, `1.5h`.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let mut total = 0f64;
    let mut rest = s;
    if rest.is_empty() {
        return Err("empty duration".into());
    }
    while !rest.is_empty() {
        let n_end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("missing unit in duration {s:?}"))?;
        let n: f64 = rest[..n_end]
            .parse()
            .map_err(|_| format!("invalid duration {s:?}"))?;
        rest = &rest[n_end..];
        let u_end = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u_end] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            u => return Err(format!("unknown unit {u:?} in duration {s:?}")),
        };
        total += n * unit;
        rest = &rest[u_end..];
    }
    Ok(Duration::from_secs_f64(total))
}

/// The time zone named by a CronJob's `timeZone`.
pub fn time_zone(name: Option<&str>) -> Result<TimeZone, String> {
    let name = match name.map(str::trim) {
        None | Some("") | Some("UTC") | Some("Etc/UTC") | Some("Etc/GMT") | Some("GMT") => {
            return Ok(TimeZone::UTC);
        }
        Some(n) => n,
    };
    let safe = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'_' | b'-' | b'+'))
        && !name.starts_with('/')
        && !name
            .split('/')
            .any(|p| p.is_empty() || p == "." || p == "..");
    if !safe {
        return Err(format!("unknown time zone {name}"));
    }
    let dir = std::env::var("ZONEINFO").unwrap_or_else(|_| "/usr/share/zoneinfo".into());
    let data = std::fs::read(std::path::Path::new(&dir).join(name))
        .map_err(|_| format!("unknown time zone {name}"))?;
    TimeZone::tzif(name, &data).map_err(|e| format!("unknown time zone {name}: {e}"))
}

fn has(bits: u64, n: i8) -> bool {
    bits & (1 << n) != 0
}

impl Schedule {
    /// The first time strictly after `after` that the schedule fires, in
    /// `tz`; `None` if it never does within five years (`0 0 30 2 *`).
    pub fn next(&self, after: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let (minute, hour, dom, month, dow) = match *self {
            Schedule::Every(d) => {
                let secs = after.as_second() + d.as_secs() as i64;
                return Timestamp::from_second(secs).ok();
            }
            Schedule::Fields {
                minute,
                hour,
                dom,
                month,
                dow,
            } => (minute, hour, dom, month, dow),
        };
        let day_matches = |t: DateTime| {
            let d = has(dom, t.day());
            let w = has(dow, t.weekday().to_sunday_zero_offset());
            if dom & STAR != 0 || dow & STAR != 0 {
                d && w
            } else {
                d || w
            }
        };
        let start = tz.to_datetime(after);
        let mut t = civil::datetime(
            start.year(),
            start.month(),
            start.day(),
            start.hour(),
            start.minute(),
            0,
            0,
        )
        .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(1))
        .ok()?;
        let limit = start.year() + 5;
        while t.year() <= limit {
            if !has(month, t.month()) {
                let (y, m) = if t.month() == 12 {
                    (t.year() + 1, 1)
                } else {
                    (t.year(), t.month() + 1)
                };
                t = civil::datetime(y, m, 1, 0, 0, 0, 0);
                continue;
            }
            if !day_matches(t) {
                t = t
                    .date()
                    .tomorrow()
                    .ok()?
                    .to_datetime(civil::time(0, 0, 0, 0));
                continue;
            }
            if !has(hour, t.hour()) {
                t = civil::datetime(t.year(), t.month(), t.day(), t.hour(), 0, 0, 0)
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_hours(1))
                    .ok()?;
                continue;
            }
            if !has(minute, t.minute()) {
                t = t
                    .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(1))
                    .ok()?;
                continue;
            }
            // A time skipped by a DST gap runs after the gap; the second
            // pass of a repeated hour is not run again.
            let ts = tz.to_timestamp(t).ok()?;
            if ts > after {
                return Some(ts);
            }
            t = t
                .checked_add(k8s_openapi::jiff::SignedDuration::from_mins(1))
                .ok()?;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn next(spec: &str, after: &str) -> String {
        parse(spec)
            .unwrap()
            .next(at(after), &TimeZone::UTC)
            .map(|t| t.to_string())
            .unwrap_or_else(|| "never".into())
    }

    #[test]
    fn golden_next_times() {
        let cases = [
            (
                "*/15 * * * *",
                "2025-03-10T10:07:00Z",
                "2025-03-10T10:15:00Z",
            ),
            (
                "*/15 * * * *",
                "2025-03-10T10:15:00Z",
                "2025-03-10T10:30:00Z",
            ),
            ("* * * * *", "2025-03-10T10:07:30Z", "2025-03-10T10:08:00Z"),
            (
                "0 9 * * MON-FRI",
                "2025-03-08T12:00:00Z",
                "2025-03-10T09:00:00Z",
            ), // Saturday → Monday
            ("30 2 * * 0", "2025-03-10T00:00:00Z", "2025-03-16T02:30:00Z"),
            ("0 0 1 * *", "2025-01-31T23:59:00Z", "2025-02-01T00:00:00Z"),
            ("0 0 29 2 *", "2025-01-01T00:00:00Z", "2028-02-29T00:00:00Z"),
            (
                "5-10/2 * * * *",
                "2025-03-10T10:07:00Z",
                "2025-03-10T10:09:00Z",
            ),
            (
                "5/20 * * * *",
                "2025-03-10T10:46:00Z",
                "2025-03-10T11:05:00Z",
            ),
            (
                "0 0 1 jan,JUL ?",
                "2025-02-01T00:00:00Z",
                "2025-07-01T00:00:00Z",
            ),
            (
                "0 12 * * sun,6",
                "2025-03-10T00:00:00Z",
                "2025-03-15T12:00:00Z",
            ),
            // Both day fields restricted: the 13th or a Friday.
            ("0 0 13 * 5", "2025-03-08T00:00:00Z", "2025-03-13T00:00:00Z"),
            ("0 0 13 * 5", "2025-03-13T00:00:00Z", "2025-03-14T00:00:00Z"),
            // `*/1` keeps the star: only Fridays that are... every day AND Friday.
            (
                "0 0 */1 * 5",
                "2025-03-08T00:00:00Z",
                "2025-03-14T00:00:00Z",
            ),
            // `*/2` drops it: odd days or Fridays.
            (
                "0 0 */2 * 5",
                "2025-03-13T12:00:00Z",
                "2025-03-14T00:00:00Z",
            ),
            ("@hourly", "2025-03-10T10:07:00Z", "2025-03-10T11:00:00Z"),
            ("@daily", "2025-03-10T10:07:00Z", "2025-03-11T00:00:00Z"),
            ("@midnight", "2025-03-10T10:07:00Z", "2025-03-11T00:00:00Z"),
            ("@weekly", "2025-03-10T10:07:00Z", "2025-03-16T00:00:00Z"),
            ("@monthly", "2025-03-10T10:07:00Z", "2025-04-01T00:00:00Z"),
            ("@yearly", "2025-03-10T10:07:00Z", "2026-01-01T00:00:00Z"),
            ("@annually", "2025-03-10T10:07:00Z", "2026-01-01T00:00:00Z"),
            ("@every 90m", "2025-03-10T10:07:00Z", "2025-03-10T11:37:00Z"),
            (
                "@every 1h0m30s",
                "2025-03-10T10:07:00Z",
                "2025-03-10T11:07:30Z",
            ),
            ("0 0 30 2 *", "2025-01-01T00:00:00Z", "never"),
            (
                "59 23 31 12 *",
                "2025-12-31T23:59:00Z",
                "2026-12-31T23:59:00Z",
            ),
        ];
        for (spec, after, want) in cases {
            assert_eq!(next(spec, after), want, "{spec} after {after}");
        }
    }

    #[test]
    fn bad_schedules_say_why() {
        let cases = [
            ("", "empty spec string"),
            ("* * * *", "expected exactly 5 fields, found 4"),
            ("* * * * * *", "expected exactly 5 fields, found 6"),
            ("60 * * * *", "end of range (60) above maximum (59)"),
            ("* 24 * * *", "end of range (24) above maximum (23)"),
            ("* * 0 * *", "beginning of range (0) below minimum (1)"),
            ("* * * 13 *", "above maximum (12)"),
            ("* * * * 7", "above maximum (6)"),
            (
                "5-1 * * * *",
                "beginning of range (5) beyond end of range (1)",
            ),
            ("*/0 * * * *", "step of range should be a positive number"),
            ("1-2-3 * * * *", "too many hyphens"),
            ("*/2/3 * * * *", "too many slashes"),
            ("x * * * *", "failed to parse int from x"),
            ("-1 * * * *", "failed to parse int"),
            ("* * * foo *", "failed to parse int from foo"),
            ("@fortnightly", "unrecognized descriptor: @fortnightly"),
            ("@every 5", "missing unit"),
            ("TZ=UTC 0 * * * *", "cannot use TZ or CRON_TZ"),
        ];
        for (spec, want) in cases {
            let err = parse(spec).unwrap_err();
            assert!(err.contains(want), "{spec:?}: {err:?} lacks {want:?}");
        }
    }

    #[test]
    fn lists_ranges_and_names_set_the_right_bits() {
        let Schedule::Fields {
            minute, dow, month, ..
        } = parse("0,30 * * JAN-mar mon-wed,FRI").unwrap()
        else {
            panic!("fields");
        };
        assert_eq!(minute, (1 << 0) | (1 << 30));
        assert_eq!(month, 0b1110);
        assert_eq!(dow, (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5));
    }

    #[test]
    fn time_zones() {
        assert_eq!(time_zone(None).unwrap(), TimeZone::UTC);
        assert_eq!(time_zone(Some("Etc/UTC")).unwrap(), TimeZone::UTC);
        assert!(time_zone(Some("Mars/Olympus_Mons")).is_err());
        assert!(time_zone(Some("../../etc/passwd")).is_err());
        // The system's zoneinfo is optional where the tests run.
        if let Ok(ny) = time_zone(Some("America/New_York")) {
            let s = parse("0 9 * * *").unwrap();
            // Winter (EST, UTC-5) and summer (EDT, UTC-4).
            assert_eq!(
                s.next(at("2025-01-10T00:00:00Z"), &ny).unwrap(),
                at("2025-01-10T14:00:00Z")
            );
            assert_eq!(
                s.next(at("2025-07-10T00:00:00Z"), &ny).unwrap(),
                at("2025-07-10T13:00:00Z")
            );
            // 02:30 does not exist on 2025-03-09: it runs after the gap, at 03:30 EDT.
            let s = parse("30 2 * * *").unwrap();
            assert_eq!(
                s.next(at("2025-03-09T05:00:00Z"), &ny).unwrap(),
                at("2025-03-09T07:30:00Z")
            );
        }
    }
}
