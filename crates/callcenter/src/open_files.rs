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

/// How many free RTP port pairs may keep their sockets bound: as many as fit in half of the
/// open-file limit (the other half is for what calls, SIP, WebSockets, recordings and the databases
/// open). The engine never keeps more pairs than its range holds.
pub fn kept_port_pairs(open_file_limit: Option<u64>) -> usize {
    open_file_limit.map_or(usize::MAX, |limit| {
        usize::try_from(limit / 2 / 2).unwrap_or(usize::MAX)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kept_sockets_take_at_most_half_of_the_limit() {
        // systemd's unit in deploy/: 16,384 pairs, more than a 20,000-port range holds.
        assert_eq!(kept_port_pairs(Some(65_536)), 16_384);
        assert_eq!(kept_port_pairs(Some(20_000)), 5_000);
        assert_eq!(kept_port_pairs(Some(1_024)), 256);
        assert_eq!(kept_port_pairs(Some(0)), 0);
        assert_eq!(kept_port_pairs(None), usize::MAX);
    }

    #[test]
    fn after_raising_the_soft_limit_equals_the_hard_one() {
        let now = raise_to_hard_limit();
        let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile);
        assert_eq!(now, limit.current);
        assert_eq!(limit.current, limit.maximum);
    }
}
