//! The process's open-file limit: raised to the most the system allows, and shared with the media
//! engine's kept sockets (each free RTP port pair kept bound holds two descriptors).

/// The soft limit on open files after raising it to the hard limit (None: unlimited or unknown).
/// Every call holds about five descriptors, and the shell's usual soft limit of 1,024 would refuse
/// calls long before the machine is busy.
pub fn raise_to_hard_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        let raised = rustix::process::Rlimit {
            current: limit.maximum,
            maximum: limit.maximum,
        };
        match setrlimit(Resource::Nofile, raised) {
            Ok(()) => tracing::info!(
                from = ?limit.current,
                to = ?limit.maximum,
                "open-file limit raised to the hard limit"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
        }
    }
    getrlimit(Resource::Nofile).current
}

/// How many free RTP port pairs may keep their sockets bound: every pair of the range when their
/// sockets fit in half of the open-file limit (the other half is for what calls, SIP, WebSockets,
/// recordings and the databases open), else as many as fit there.
pub fn kept_port_pairs(open_file_limit: Option<u64>, port_min: u16, port_max: u16) -> usize {
    let pairs = usize::from(port_max.saturating_sub(port_min).saturating_add(1)) / 2;
    match open_file_limit {
        None => pairs,
        Some(limit) => pairs.min(usize::try_from(limit / 2 / 2).unwrap_or(usize::MAX)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_whole_range_is_kept_when_half_of_the_limit_holds_it() {
        // The default range, 10000-30999: 10,500 pairs, 21,000 descriptors.
        assert_eq!(kept_port_pairs(Some(1_048_576), 10000, 30999), 10_500);
        assert_eq!(kept_port_pairs(None, 10000, 30999), 10_500);
        // systemd's unit in deploy/: every pair of a 20,000-port range.
        assert_eq!(kept_port_pairs(Some(65_536), 10000, 29999), 10_000);
        assert_eq!(kept_port_pairs(Some(20_000), 10000, 30999), 5_000);
        assert_eq!(kept_port_pairs(Some(1_024), 10000, 30999), 256);
        assert_eq!(kept_port_pairs(Some(0), 10000, 10001), 0);
    }

    #[test]
    fn after_raising_the_soft_limit_equals_the_hard_one() {
        let now = raise_to_hard_limit();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now, limit.current);
        assert_eq!(limit.current, limit.maximum);
    }
}
