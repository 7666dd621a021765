//! Who may do what. Pure rules, applied by the storage thread inside the transaction that
//! makes the change, so a check and its write can never be separated.

use crate::ids::UserUid;

/// Management (settings, channels, categories, layout): a server with an owner is managed
/// by its owner only; a server nobody has claimed is managed by anyone (the current client
/// has no roles and shows the controls to everyone).
pub fn may_manage(owner: Option<&UserUid>, actor: &UserUid) -> bool {
    owner.is_none_or(|owner| owner == actor)
}

/// Deleting a message: the author always may; anyone else only where they may manage.
pub fn may_delete_message(author: &UserUid, owner: Option<&UserUid>, actor: &UserUid) -> bool {
    author == actor || may_manage(owner, actor)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uid(raw: &str) -> UserUid {
        UserUid::parse(raw).unwrap()
    }

    #[test]
    fn unclaimed_servers_are_managed_by_anyone_claimed_ones_by_the_owner() {
        assert!(may_manage(None, &uid("uid_a")));
        assert!(may_manage(Some(&uid("uid_a")), &uid("uid_a")));
        assert!(!may_manage(Some(&uid("uid_a")), &uid("uid_b")));
    }

    #[test]
    fn authors_delete_their_own_messages_even_on_claimed_servers() {
        let owner = uid("uid_owner");
        assert!(may_delete_message(&uid("uid_a"), Some(&owner), &uid("uid_a")));
        assert!(!may_delete_message(&uid("uid_a"), Some(&owner), &uid("uid_b")));
        assert!(may_delete_message(&uid("uid_a"), Some(&owner), &owner));
        assert!(may_delete_message(&uid("uid_a"), None, &uid("uid_b")));
    }
}
