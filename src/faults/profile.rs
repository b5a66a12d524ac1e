//! Fault profiles: TOML documents of rules (see docs/PROFILES.md).

/// A validated fault profile.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    /// Its name (`lost-carrier`, or the file's stem).
    pub name: String,
    /// One line saying what it does.
    pub summary: String,
}

impl Profile {
    /// The profile that injects nothing.
    pub fn passthrough() -> Profile {
        Profile { name: "passthrough".into(), summary: "relay everything untouched".into() }
    }
}
