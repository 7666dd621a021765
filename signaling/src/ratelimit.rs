//! Rate limits: per user on authed routes (`limits.rate_limit_per_minute`), per client IP
//! on public routes. Keyed token buckets from `governor`; keys that went quiet are pruned so
//! memory stays bounded.

use std::net::IpAddr;
use std::num::NonZeroU32;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

/// Public requests one IP may make per minute, as a multiple of the per-user limit
/// (rendering a long history fetches many images; several users may share one address).
pub const PUBLIC_REQUESTS_PER_IP_FACTOR: u32 = 10;
/// Keys tracked before idle ones are pruned.
pub const TRACKED_KEYS_MAX: usize = 100_000;

#[derive(Debug)]
pub struct Limiters {
    users: DefaultKeyedRateLimiter<String>,
    /// KeyPackage claims per caller (E2EE.md: claims are rate-limited per caller).
    claims: DefaultKeyedRateLimiter<String>,
    /// Epoch rotations per (channel, member): every rotation makes every member's next post
    /// `epoch_stale`, so one member must not be able to rotate at will.
    rotations: DefaultKeyedRateLimiter<String>,
    ips: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
}

fn quota(per_minute: u32) -> Quota {
    Quota::per_minute(NonZeroU32::new(per_minute.max(1)).unwrap_or(NonZeroU32::MIN))
}

/// [`EPOCH_ROTATIONS_BURST_MAX`](openchat_core::limits::EPOCH_ROTATIONS_BURST_MAX) at once,
/// then one per [`EPOCH_ROTATION_INTERVAL_SECONDS`](openchat_core::limits::EPOCH_ROTATION_INTERVAL_SECONDS).
fn rotation_quota() -> Quota {
    use openchat_core::limits::{EPOCH_ROTATION_INTERVAL_SECONDS, EPOCH_ROTATIONS_BURST_MAX};
    let burst = NonZeroU32::new(EPOCH_ROTATIONS_BURST_MAX).unwrap_or(NonZeroU32::MIN);
    Quota::with_period(std::time::Duration::from_secs(EPOCH_ROTATION_INTERVAL_SECONDS))
        .unwrap_or_else(|| Quota::per_minute(NonZeroU32::MIN))
        .allow_burst(burst)
}

impl Limiters {
    pub fn new(user_per_minute: u32, ip_per_minute: u32) -> Self {
        Self {
            users: RateLimiter::keyed(quota(user_per_minute)),
            claims: RateLimiter::keyed(quota(openchat_core::limits::KEY_CLAIMS_PER_MINUTE)),
            rotations: RateLimiter::keyed(rotation_quota()),
            ips: RateLimiter::keyed(quota(ip_per_minute)),
            clock: DefaultClock::default(),
        }
    }

    /// `Err(seconds to wait)` when the user is over their limit.
    pub fn check_user(&self, user: &str) -> Result<(), u64> {
        self.prune();
        self.users
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs() + 1)
    }

    /// `Err(seconds to wait)` when the caller claimed too many KeyPackages lately.
    pub fn check_claim(&self, user: &str) -> Result<(), u64> {
        self.prune();
        self.claims
            .check_key(&user.to_owned())
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs() + 1)
    }

    /// `Err(seconds to wait)` when this member rotated this channel's epoch too often lately.
    pub fn check_rotation(&self, channel: &str, user: &str) -> Result<(), u64> {
        self.prune();
        self.rotations
            .check_key(&format!("{channel}\n{user}"))
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs() + 1)
    }

    /// `Err(seconds to wait)` when the IP is over its limit.
    pub fn check_ip(&self, ip: IpAddr) -> Result<(), u64> {
        self.prune();
        self.ips
            .check_key(&ip)
            .map_err(|not_until| not_until.wait_time_from(self.clock.now()).as_secs() + 1)
    }

    fn prune(&self) {
        if self.users.len() > TRACKED_KEYS_MAX {
            self.users.retain_recent();
        }
        if self.claims.len() > TRACKED_KEYS_MAX {
            self.claims.retain_recent();
        }
        if self.rotations.len() > TRACKED_KEYS_MAX {
            self.rotations.retain_recent();
        }
        if self.ips.len() > TRACKED_KEYS_MAX {
            self.ips.retain_recent();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn users_over_their_limit_are_told_when_to_retry() {
        let limiters = Limiters::new(3, 100);
        for _ in 0..3 {
            assert!(limiters.check_user("uid_a").is_ok());
        }
        let wait = limiters.check_user("uid_a").unwrap_err();
        assert!((1..=61).contains(&wait), "{wait}");
        assert!(limiters.check_user("uid_b").is_ok(), "limits are per user");
        assert!(limiters.check_ip("127.0.0.1".parse().unwrap()).is_ok());
    }

    #[test]
    fn epoch_rotations_are_limited_per_channel_and_member() {
        use openchat_core::limits::{EPOCH_ROTATION_INTERVAL_SECONDS, EPOCH_ROTATIONS_BURST_MAX};
        let limiters = Limiters::new(1000, 1000);
        for _ in 0..EPOCH_ROTATIONS_BURST_MAX {
            assert!(limiters.check_rotation("ch_a", "uid_a").is_ok());
        }
        let wait = limiters.check_rotation("ch_a", "uid_a").unwrap_err();
        assert!(
            (1..=EPOCH_ROTATION_INTERVAL_SECONDS + 1).contains(&wait),
            "{wait}"
        );
        assert!(limiters.check_rotation("ch_a", "uid_b").is_ok(), "per member");
        assert!(limiters.check_rotation("ch_b", "uid_a").is_ok(), "per channel");
    }
}
