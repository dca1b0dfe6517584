//! The kubelet's restart back-off (client-go's `flowcontrol.Backoff` as
//! `kuberuntime` uses it): the first restart of a container is immediate;
//! each later one waits the current delay, counted from when the last run
//! ended, which starts at the initial value and doubles up to the maximum;
//! when two failures are further apart than twice the maximum (10 min with
//! Kubernetes' 5 min), the delay starts again from the initial value.

use std::time::{Duration, SystemTime};

/// Delays of a back-off. Kubernetes: 10 s doubling to 300 s.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    pub initial: Duration,
    pub max: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            initial: Duration::from_secs(10),
            max: Duration::from_secs(300),
        }
    }
}

/// One container's back-off state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backoff {
    delay: Option<Duration>,
    last: Option<SystemTime>,
}

impl Backoff {
    /// How much longer a restart must wait after a run that ended at
    /// `ended`; `None` when it may start now.
    pub fn remaining(&self, ended: SystemTime, now: SystemTime) -> Option<Duration> {
        let delay = self.delay?;
        let since = now.duration_since(ended).unwrap_or_default();
        (since < delay).then(|| delay - since)
    }

    /// The delay a restart is waiting for, as the kubelet's message says it.
    pub fn delay(&self) -> Option<Duration> {
        self.delay
    }

    /// Records a restart after a run that ended at `ended`: the next one
    /// waits longer, unless the failures were far apart.
    pub fn next(&mut self, policy: Policy, ended: SystemTime) {
        let far_apart = self
            .last
            .is_some_and(|l| ended.duration_since(l).unwrap_or_default() > policy.max * 2);
        self.delay = match self.delay {
            Some(d) if !far_apart => Some((d * 2).min(policy.max)),
            _ => Some(policy.initial.min(policy.max)),
        };
        self.last = Some(ended);
    }
}

/// A duration as Go prints one (`10s`, `1m20s`, `5m0s`, `500ms`): the
/// kubelet's messages are read by people used to that form.
pub fn go_duration(d: Duration) -> String {
    let secs = d.as_secs();
    if secs == 0 {
        return format!("{}ms", d.subsec_millis());
    }
    let frac = d.subsec_millis();
    let s = if frac == 0 {
        format!("{}s", secs % 60)
    } else {
        let frac = format!("{frac:03}");
        format!("{}.{}s", secs % 60, frac.trim_end_matches('0'))
    };
    match (secs / 3600, secs / 60 % 60) {
        (0, 0) => s,
        (0, m) => format!("{m}m{s}"),
        (h, m) => format!("{h}h{m}m{s}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000 + secs)
    }

    #[test]
    fn first_restart_is_immediate_then_delays_double_to_the_cap() {
        let p = Policy::default();
        let mut b = Backoff::default();
        assert_eq!(b.remaining(at(0), at(0)), None);
        b.next(p, at(0));
        let mut seen = Vec::new();
        let mut t = 0;
        for _ in 0..7 {
            t += 1;
            let wait = b.remaining(at(t), at(t)).expect("in back-off");
            seen.push(wait.as_secs());
            t += wait.as_secs();
            assert_eq!(b.remaining(at(t - wait.as_secs()), at(t)), None);
            b.next(p, at(t - wait.as_secs()));
        }
        assert_eq!(seen, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn a_long_healthy_run_resets_the_delay() {
        let p = Policy::default();
        let mut b = Backoff::default();
        b.next(p, at(0));
        b.next(p, at(30));
        assert_eq!(b.delay(), Some(Duration::from_secs(20)));
        b.next(p, at(30 + 601));
        assert_eq!(b.delay(), Some(Duration::from_secs(10)));
        let short = Policy {
            initial: Duration::from_secs(1),
            max: Duration::from_secs(4),
        };
        let mut b = Backoff::default();
        b.next(short, at(0));
        assert_eq!(b.remaining(at(1), at(1)), Some(Duration::from_secs(1)));
    }

    #[test]
    fn durations_print_as_go_does() {
        let s = Duration::from_secs;
        assert_eq!(go_duration(s(10)), "10s");
        assert_eq!(go_duration(s(80)), "1m20s");
        assert_eq!(go_duration(s(300)), "5m0s");
        assert_eq!(go_duration(Duration::from_millis(500)), "500ms");
        assert_eq!(go_duration(Duration::from_millis(1500)), "1.5s");
    }
}
