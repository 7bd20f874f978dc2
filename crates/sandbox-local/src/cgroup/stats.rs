//! Pure parsers for the contents of cgroup interface files.

/// v1 reports "no limit" as LONG_MAX rounded down to a page; anything this large is no limit.
const V1_UNLIMITED: u64 = 0x7FFF_FFFF_FFFF_F000;

/// A single unsigned number (`memory.current`, `cpuacct.usage`, ...).
pub(crate) fn parse_u64(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// A limit: `max` (v2), `-1` or a value at v1's LONG_MAX ceiling mean no limit, reported as
/// `u64::MAX`.
pub(crate) fn parse_limit(text: &str) -> Option<u64> {
    match text.trim() {
        "max" | "-1" => Some(u64::MAX),
        t => t
            .parse::<u64>()
            .ok()
            .map(|v| if v >= V1_UNLIMITED { u64::MAX } else { v }),
    }
}

/// The value of `key` in a flat-keyed file (`key value` per line: `memory.stat`, `cpu.stat`,
/// `memory.events`, `pids.events`, `memory.oom_control`, `cgroup.events`).
pub(crate) fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        (it.next() == Some(key)).then(|| it.next()?.parse().ok())?
    })
}

/// The pids listed one per line in `cgroup.procs` / `tasks`.
pub(crate) fn parse_pids(text: &str) -> Vec<i32> {
    text.split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Working-set memory: usage minus the inactive file cache the kernel can drop at will.
/// `stat` is `memory.stat`; v1 has a hierarchical `total_inactive_file`, preferred when present.
pub(crate) fn working_set(usage: u64, stat: &str) -> u64 {
    let inactive = keyed(stat, "total_inactive_file")
        .or_else(|| keyed(stat, "inactive_file"))
        .unwrap_or(0);
    usage.saturating_sub(inactive)
}

/// Whether a space-separated controller list (`cgroup.controllers`,
/// `cgroup.subtree_control`) contains `name`.
pub(crate) fn has_word(text: &str, name: &str) -> bool {
    text.split_whitespace().any(|w| w == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_stat_v1_prefers_hierarchical_total() {
        let stat = "cache 1000\nrss 5000\ninactive_file 100\nactive_file 200\n\
                    total_cache 9000\ntotal_inactive_file 4096\ntotal_active_file 300\n";
        assert_eq!(keyed(stat, "inactive_file"), Some(100));
        assert_eq!(keyed(stat, "total_inactive_file"), Some(4096));
        assert_eq!(working_set(10_000, stat), 10_000 - 4096);
    }

    #[test]
    fn memory_stat_v2_and_underflow() {
        let stat = "anon 8192\nfile 65536\nkernel 1024\nactive_file 12\ninactive_file 60000\n";
        assert_eq!(working_set(100_000, stat), 40_000);
        assert_eq!(working_set(1_000, stat), 0, "never below zero");
        assert_eq!(working_set(1_000, ""), 1_000);
    }

    #[test]
    fn oom_control_v1() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(t, "oom_kill"), Some(3));
        assert_eq!(keyed(t, "oom_kill_disable"), Some(0));
        assert_eq!(
            keyed("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"),
            None,
            "pre-4.13 kernels"
        );
    }

    #[test]
    fn events_files() {
        assert_eq!(keyed("max 7\n", "max"), Some(7));
        let ev = "low 0\nhigh 0\nmax 12\noom 2\noom_kill 1\noom_group_kill 0\n";
        assert_eq!(keyed(ev, "oom_kill"), Some(1));
        assert_eq!(keyed(ev, "oom"), Some(2), "keys match whole words only");
        assert_eq!(keyed("populated 1\nfrozen 1\n", "frozen"), Some(1));
        assert_eq!(keyed("max\n", "max"), None, "no value");
    }

    #[test]
    fn cpu_stat_v2() {
        let t = "usage_usec 100580732\nuser_usec 69358488\nsystem_usec 31222244\n\
                 nr_periods 10\nnr_throttled 4\nthrottled_usec 500\n";
        assert_eq!(keyed(t, "usage_usec"), Some(100_580_732));
        assert_eq!(keyed(t, "nr_throttled"), Some(4));
    }

    #[test]
    fn limits_and_numbers() {
        assert_eq!(parse_limit("max\n"), Some(u64::MAX));
        assert_eq!(parse_limit("-1"), Some(u64::MAX));
        assert_eq!(parse_limit("9223372036854771712\n"), Some(u64::MAX));
        assert_eq!(parse_limit("67108864\n"), Some(64 << 20));
        assert_eq!(parse_limit("lots"), None);
        assert_eq!(parse_u64(" 42\n"), Some(42));
        assert_eq!(parse_u64(""), None);
        assert_eq!(parse_pids("12\n345\n\n"), vec![12, 345]);
        assert!(has_word("cpu memory pids\n", "memory"));
        assert!(!has_word("cpuset io\n", "cpu"));
    }
}
