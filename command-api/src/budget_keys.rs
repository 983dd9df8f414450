//! The keys of the budgets that are not per user: failed logins into a
//! username from an address, and what one address may do (fail logins on any
//! name, register). Each is a UUID, so a bucket has a fixed size whatever the
//! client sends.

use uuid::Uuid;

/// Namespace of these keys' UUIDv5s.
const USERNAME_NAMESPACE: Uuid = Uuid::from_u128(0x5f0c_2a8e_7d1b_4c3a_9e6f_1b2d_3c4e_5a6b);

/// The bucket key of failed logins into `username` from `address`: the name
/// is read as registration reads it (trimmed, lowercased), so `" Alice"` and
/// `"alice"` share one budget, and each address has its own, so someone
/// hammering a name does not lock its owner out elsewhere.
pub fn login_key(username: &str, address: &str) -> Uuid {
    let name = parley_domain::values::Username::parse(username)
        .map(|u| u.into_inner())
        .unwrap_or_else(|_| username.trim().to_lowercase());
    Uuid::new_v5(&USERNAME_NAMESPACE, format!("{name}\n{address}").as_bytes())
}

/// The bucket key of an address (failed logins, registrations).
pub fn address_key(address: &str) -> Uuid {
    Uuid::new_v5(
        &USERNAME_NAMESPACE,
        format!("address\n{address}").as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn login_keys_follow_registration_parsing_and_split_by_address() {
        assert_eq!(
            login_key(" Alice ", "1.2.3.4"),
            login_key("alice", "1.2.3.4")
        );
        assert_ne!(login_key("alice", "1.2.3.4"), login_key("alice", "5.6.7.8"));
        assert_ne!(login_key("alice", "1.2.3.4"), address_key("1.2.3.4"));
    }
}
