//! Why an end-to-end-encryption or session rule refused a request (E2EE.md): one variant
//! per wire code. The storage thread and the front-end speak these; the front-end alone
//! turns one into an HTTP status (`openchat_signaling::error::denial_status`).

/// A refused E2EE or session request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Denial {
    /// The caller is not a member of the channel.
    NotAMember,
    /// The caller was not a member at that epoch.
    NotAMemberOfEpoch,
    /// The caller's device is not active (pending or revoked) for this.
    DeviceNotActive,
    /// Not the caller's to change (another user's device, say).
    Forbidden,
    /// The device was revoked.
    DeviceRevoked,
    /// A device named in the request is not the caller's device.
    DeviceMismatch,
    /// A pending device's session may not do this.
    ScopeInsufficient,
    /// Already a member of the channel.
    AlreadyMember,
    /// The epoch is already committed.
    EpochCommitExists,
    /// The epoch named is not the channel's current one.
    EpochNotCurrent,
    /// The epoch named is older than the channel's current one.
    EpochStale,
    /// The channel's current epoch waits for its commit.
    EpochCommitPending,
    /// A device with that id exists.
    DeviceExists,
    /// The user has as many devices as allowed.
    DeviceLimit,
    /// The device is not waiting for approval.
    DeviceNotPending,
    /// The device has as many key packages as allowed.
    KeyPackageLimit,
    /// The channel is a plain one.
    ChannelNotE2ee,
    /// The link request expired.
    LinkRequestExpired,
    /// The challenge is unknown, used or expired.
    ChallengeInvalid,
    /// The signature does not verify.
    SignatureInvalid,
    /// The device's key is not the one registered.
    DeviceKeyMismatch,
    /// No live session for the token.
    SessionInvalid,
    /// Identity headers name someone other than the session.
    IdentityMismatch,
}

impl Denial {
    /// Every denial, for exhaustive tests.
    pub const ALL: [Denial; 23] = [
        Self::NotAMember,
        Self::NotAMemberOfEpoch,
        Self::DeviceNotActive,
        Self::Forbidden,
        Self::DeviceRevoked,
        Self::DeviceMismatch,
        Self::ScopeInsufficient,
        Self::AlreadyMember,
        Self::EpochCommitExists,
        Self::EpochNotCurrent,
        Self::EpochStale,
        Self::EpochCommitPending,
        Self::DeviceExists,
        Self::DeviceLimit,
        Self::DeviceNotPending,
        Self::KeyPackageLimit,
        Self::ChannelNotE2ee,
        Self::LinkRequestExpired,
        Self::ChallengeInvalid,
        Self::SignatureInvalid,
        Self::DeviceKeyMismatch,
        Self::SessionInvalid,
        Self::IdentityMismatch,
    ];

    /// The wire code (E2EE.md).
    pub fn code(self) -> &'static str {
        match self {
            Self::NotAMember => "not_a_member",
            Self::NotAMemberOfEpoch => "not_a_member_of_epoch",
            Self::DeviceNotActive => "device_not_active",
            Self::Forbidden => "forbidden",
            Self::DeviceRevoked => "device_revoked",
            Self::DeviceMismatch => "device_mismatch",
            Self::ScopeInsufficient => "scope_insufficient",
            Self::AlreadyMember => "already_member",
            Self::EpochCommitExists => "epoch_commit_exists",
            Self::EpochNotCurrent => "epoch_not_current",
            Self::EpochStale => "epoch_stale",
            Self::EpochCommitPending => "epoch_commit_pending",
            Self::DeviceExists => "device_exists",
            Self::DeviceLimit => "device_limit",
            Self::DeviceNotPending => "device_not_pending",
            Self::KeyPackageLimit => "key_package_limit",
            Self::ChannelNotE2ee => "channel_not_e2ee",
            Self::LinkRequestExpired => "link_request_expired",
            Self::ChallengeInvalid => "challenge_invalid",
            Self::SignatureInvalid => "signature_invalid",
            Self::DeviceKeyMismatch => "device_key_mismatch",
            Self::SessionInvalid => "session_invalid",
            Self::IdentityMismatch => "identity_mismatch",
        }
    }
}

impl std::fmt::Display for Denial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_denial_has_its_own_snake_case_code() {
        let codes: std::collections::HashSet<&str> = Denial::ALL.iter().map(|d| d.code()).collect();
        assert_eq!(codes.len(), Denial::ALL.len());
        assert!(codes.iter().all(|c| {
            c.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        }));
    }
}
