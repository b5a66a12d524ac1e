//! `popfault profiles [show NAME]` and `popfault check-profile FILE`: the
//! built-in fault profiles, and a profile file's validation.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use super::common::RunError;
use crate::faults::builtin;

/// `popfault profiles [show NAME]`
#[derive(Debug, Args)]
pub struct ProfilesArgs {
    #[command(subcommand)]
    pub show: Option<ProfilesCommand>,
}

/// `popfault profiles show NAME`
#[derive(Debug, Subcommand)]
pub enum ProfilesCommand {
    /// Print a built-in profile as TOML (a starting point for your own).
    Show {
        /// The profile's name.
        name: String,
    },
}

/// `popfault check-profile FILE`
#[derive(Debug, Args)]
pub struct CheckProfileArgs {
    /// The TOML file.
    pub file: PathBuf,
}

/// Lists the built-ins, or prints one as TOML.
pub fn profiles(a: ProfilesArgs) -> Result<ExitCode, RunError> {
    match a.show {
        None => {
            let all = builtin::builtins().map_err(|e| RunError::Failed(e.to_string()))?;
            let width = all.iter().map(|p| p.name.len()).max().unwrap_or(0);
            for p in all {
                println!("{:<width$}  {}", p.name, p.summary);
            }
            println!("\n`popfault profiles show NAME` prints one as TOML; --profile takes a name or a file.");
        }
        Some(ProfilesCommand::Show { name }) => match builtin::BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((_, text)) => print!("{text}"),
            None => {
                let known: Vec<&str> = builtin::BUILTIN.iter().map(|(n, _)| *n).collect();
                return Err(RunError::Usage(format!("no built-in profile '{name}' (built-ins: {})", known.join(", "))));
            }
        },
    }
    Ok(ExitCode::SUCCESS)
}

/// Loads the file as a profile: `ok` with its name, or the located error.
pub fn check_profile(a: CheckProfileArgs) -> Result<ExitCode, RunError> {
    match builtin::load_file(&a.file) {
        Ok(p) => {
            let n = p.rules.len();
            // An empty file is valid, but may be a mistake: say what it does.
            let note = if n == 0 { ": a passthrough, it injects no faults (add [[rule]] tables)" } else { "" };
            println!("{}: ok: profile '{}' with {n} rule(s){note}", a.file.display(), p.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => Err(RunError::Usage(e.to_string())),
    }
}
