//! Redis's eviction policy, checked each time the gateway (re)connects: a job's keys
//! must never be evicted. Under an `allkeys-*` policy Redis may drop a job's meta hash or
//! its stream under memory pressure; the job then starts a new life and its readers
//! reset, so acknowledged lines are gone. Only `noeviction` (publishes fail with 503 when
//! Redis is full) or a `volatile-*` policy (the gateway's keys have no TTL until the job
//! finishes) keep them. A server that hides `CONFIG` (some managed services) is trusted.

use super::link::Conn;

/// Whether `policy` may evict keys a running job needs.
pub(crate) fn evicts_live_keys(policy: &str) -> bool {
    policy.starts_with("allkeys-")
}

/// Warns when Redis may evict a running job's keys.
pub(crate) async fn check(conn: &Conn) {
    let reply: redis::RedisResult<Vec<String>> = conn
        .query(redis::cmd("CONFIG").arg("GET").arg("maxmemory-policy"))
        .await;
    let Ok(pair) = reply else { return };
    if let Some(policy) = pair.get(1).filter(|p| evicts_live_keys(p)) {
        tracing::warn!(
            redis.maxmemory_policy = %policy,
            "redis may evict running jobs' keys under memory pressure (readers would reset \
             and acknowledged lines be lost); set maxmemory-policy to noeviction"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_allkeys_policies_evict_live_keys() {
        assert!(evicts_live_keys("allkeys-lru"));
        assert!(evicts_live_keys("allkeys-random"));
        assert!(!evicts_live_keys("noeviction"));
        assert!(!evicts_live_keys("volatile-lru"));
    }
}
