//! The built-in profiles: the TOML files in `profiles/`, compiled in.

use std::path::Path;
use std::sync::Arc;

use super::profile::{Profile, ProfileError};

/// (name, TOML text) of every built-in profile, in the order listed.
pub const BUILTIN: &[(&str, &str)] = &[
    ("passthrough", include_str!("../../profiles/passthrough.toml")),
    ("lost-carrier", include_str!("../../profiles/lost-carrier.toml")),
    ("lost-carrier-at-quit", include_str!("../../profiles/lost-carrier-at-quit.toml")),
    ("call-waiting", include_str!("../../profiles/call-waiting.toml")),
    ("server-down", include_str!("../../profiles/server-down.toml")),
    ("server-down-hang", include_str!("../../profiles/server-down-hang.toml")),
    ("server-down-err", include_str!("../../profiles/server-down-err.toml")),
    ("server-flapping", include_str!("../../profiles/server-flapping.toml")),
    ("modem-28k8", include_str!("../../profiles/modem-28k8.toml")),
    ("busy-mailbox", include_str!("../../profiles/busy-mailbox.toml")),
    ("flaky-line", include_str!("../../profiles/flaky-line.toml")),
    ("demo", include_str!("../../profiles/demo.toml")),
];

/// A built-in profile by name.
pub fn builtin(name: &str) -> Option<Result<Profile, ProfileError>> {
    BUILTIN.iter().find(|(n, _)| *n == name).map(|(n, text)| Profile::from_toml(text, &format!("profiles/{n}.toml"), n))
}

/// Every built-in profile, parsed.
pub fn builtins() -> Result<Vec<Arc<Profile>>, ProfileError> {
    BUILTIN.iter().map(|(n, text)| Profile::from_toml(text, &format!("profiles/{n}.toml"), n).map(Arc::new)).collect()
}

/// Why a `--profile` argument could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Neither a built-in name nor a readable file.
    #[error("no built-in profile '{name}' and no such file (built-ins: {known}; `popfault profiles` lists them)")]
    Unknown {
        /// What was asked for.
        name: String,
        /// The built-in names.
        known: String,
    },
    /// The file exists but could not be read.
    #[error("cannot read profile {path}: {error}")]
    Read {
        /// The path.
        path: String,
        /// The I/O error.
        error: std::io::Error,
    },
    /// The profile is invalid.
    #[error("{0}")]
    Invalid(#[from] ProfileError),
}

/// Resolves `--profile NAME|PATH`: a built-in name, else a TOML file.
pub fn load(name_or_path: &str) -> Result<Profile, LoadError> {
    if let Some(p) = builtin(name_or_path) {
        return Ok(p?);
    }
    let path = Path::new(name_or_path);
    if !path.exists() {
        return Err(LoadError::Unknown {
            name: name_or_path.to_string(),
            known: BUILTIN.iter().map(|(n, _)| *n).collect::<Vec<_>>().join(", "),
        });
    }
    load_file(path)
}

/// Reads and validates a profile file; its name defaults to the file stem.
pub fn load_file(path: &Path) -> Result<Profile, LoadError> {
    let text =
        std::fs::read_to_string(path).map_err(|error| LoadError::Read { path: path.display().to_string(), error })?;
    let stem = path.file_stem().and_then(|s| s.to_str()).unwrap_or("custom");
    Ok(Profile::from_toml(&text, &path.display().to_string(), stem)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_builtin_parses_and_is_named_after_its_file() {
        for (name, _) in BUILTIN {
            let p = builtin(name).expect("listed").unwrap_or_else(|e| panic!("{e}"));
            assert_eq!(&p.name, name);
            assert!(!p.summary.is_empty(), "{name} has a summary");
        }
        assert_eq!(builtins().unwrap().len(), BUILTIN.len());
    }

    #[test]
    fn every_profile_file_is_listed() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/profiles");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .filter_map(|e| e.ok()?.path().file_stem()?.to_str().map(str::to_owned))
            .collect();
        files.sort();
        let mut listed: Vec<String> = BUILTIN.iter().map(|(n, _)| n.to_string()).collect();
        listed.sort();
        assert_eq!(files, listed);
    }

    #[test]
    fn unknown_name_lists_builtins() {
        let e = load("no-such-profile").unwrap_err().to_string();
        assert!(e.contains("lost-carrier") && e.contains("popfault profiles"), "{e}");
    }
}
