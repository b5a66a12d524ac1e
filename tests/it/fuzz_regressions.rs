//! Replays the fuzz corpora kept in the repository (fuzz/regressions/*/ and
//! fuzz/corpus-seed/*/) through the fuzz targets' harness and invariants
//! (fuzz/harness.rs), so that every crash once found stays fixed.
//!
//! A directory's name says which target its inputs belong to.

use std::fs;
use std::panic;
use std::path::{Path, PathBuf};

#[allow(dead_code)]
mod harness {
    include!("../../fuzz/harness.rs");
}

use harness::{Known, Target};

/// Every (target, input file) kept under fuzz/regressions and fuzz/corpus-seed.
fn kept_inputs() -> Vec<(Target, PathBuf)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
    let mut inputs = Vec::new();
    for kind in ["regressions", "corpus-seed"] {
        let Ok(dirs) = fs::read_dir(root.join(kind)) else { continue };
        for dir in dirs {
            let dir = dir.expect("a readable corpus directory").path();
            if !dir.is_dir() {
                continue;
            }
            let name = dir.file_name().and_then(|n| n.to_str()).unwrap_or_default();
            let target = Target::named(name).unwrap_or_else(|| panic!("{}: no such fuzz target", dir.display()));
            for file in fs::read_dir(&dir).expect("a readable corpus directory") {
                let path = file.expect("a readable corpus entry").path();
                if path.is_file() {
                    inputs.push((target, path));
                }
            }
        }
    }
    inputs.sort_by(|a, b| a.1.cmp(&b.1));
    inputs
}

/// Runs each input tolerating what `tolerate` says for its file, and
/// returns the failures (file: panic message).
fn failures(inputs: &[(Target, PathBuf)], tolerate: impl Fn(&Path) -> Vec<Known>) -> Vec<String> {
    let mut failed = Vec::new();
    for (target, path) in inputs {
        let data = fs::read(path).expect("a readable corpus file");
        let tolerated = tolerate(path);
        if let Err(err) = panic::catch_unwind(|| harness::run(*target, &data, &tolerated)) {
            let msg = err
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| err.downcast_ref::<&str>().map(ToString::to_string))
                .unwrap_or_default();
            failed.push(format!("{}: {msg}", path.display()));
        }
    }
    failed
}

/// What the fuzz targets check, on every kept input.
#[test]
fn replay_kept_corpora() {
    let inputs = kept_inputs();
    assert!(inputs.iter().any(|(_, p)| p.to_string_lossy().contains("corpus-seed")), "no seed corpus found");
    let failed = failures(&inputs, |_| harness::TOLERATED.to_vec());
    assert!(failed.is_empty(), "{} input(s) broke an invariant:\n{}", failed.len(), failed.join("\n"));
}

/// Every known bug has its reproducer, and the fuzzers tolerate only those.
#[test]
fn known_bugs_have_reproducers() {
    let inputs = kept_inputs();
    for bug in Known::ALL {
        let found = inputs.iter().filter(|(_, p)| p.file_name().is_some_and(|n| n == bug.file_name())).count();
        assert_eq!(found, 1, "{bug:?}: expected one fuzz/regressions/*/{}", bug.file_name());
    }
}

/// The same with no known bug tolerated (a reproducer named after a bug is
/// run tolerating the others, so that it shows its own): passes once
/// `harness::TOLERATED` can be emptied. Run it with
/// `cargo test --test fuzz_regressions -- --ignored` after a fix in src/.
#[test]
fn replay_kept_corpora_strictly() {
    let inputs = kept_inputs();
    let failed = failures(&inputs, |path| {
        let own = Known::ALL.into_iter().find(|b| path.file_name().is_some_and(|n| n == b.file_name()));
        match own {
            Some(bug) => harness::TOLERATED.iter().copied().filter(|b| *b != bug).collect(),
            None => Vec::new(),
        }
    });
    assert!(failed.is_empty(), "{} input(s) broke an invariant:\n{}", failed.len(), failed.join("\n"));
}

/// Found by review while writing the fuzz targets (the invariants cannot see
/// it): a SASL response line over 255 octets (a GSSAPI token, say) ends as a
/// `ClientEvent::Command { overlong: true, cmd: Unknown("") }`, which the
/// relay forwards into the response queue, so every later response is
/// attributed to the command before it: RETR's body is taken for status
/// lines and QUIT's +OK for RETR's, and the session ends "in doubt".
#[test]
fn overlong_sasl_response_is_not_a_command() {
    let token = [b"YII".to_vec(), vec![b'A'; 400], b"==\r\n".to_vec()].concat();
    let reads: Vec<harness::Read<'_>> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"AUTH GSSAPI\r\n"),
        (false, b"+ \r\n"),
        (true, &token),
        (false, b"+OK\r\n"),
        (true, b"RETR 1\r\n"),
        (false, b"+OK\r\nSubject: x\r\n\r\nbody\r\n.\r\n"),
        (true, b"QUIT\r\n"),
        (false, b"+OK\r\n"),
    ];
    let sim = harness::play(&reads, harness::TOLERATED);
    let commands: Vec<_> = sim
        .events()
        .iter()
        .filter_map(|e| match e {
            harness::Ev::C(popfault::codec::ClientEvent::Command { cmd, .. }, _) => Some(cmd.name().to_string()),
            _ => None,
        })
        .collect();
    assert_eq!(commands, ["AUTH", "RETR", "QUIT"], "only commands are queued");
    assert_eq!(sim.tracker().downloads(), 1);
    assert_eq!(sim.tracker().outcome(), popfault::session::Outcome::CleanQuit);
}

/// Found by review: past `MAX_PENDING` queued commands, a command is not
/// queued ("attributed to nothing"), but commands sent after the queue
/// drained a little are, so the untracked command's response is attributed
/// to the next queued command: here STAT's `+OK 1 5` is taken for RETR's,
/// and RETR's own status line is framed as its body.
#[test]
fn responses_past_the_pipeline_bound_are_not_misattributed() {
    use popfault::codec::framer::MAX_PENDING;
    let noops = b"NOOP\r\n".repeat(MAX_PENDING);
    let oks = b"+OK\r\n".repeat(MAX_PENDING - 1);
    let reads: Vec<harness::Read<'_>> = vec![
        (false, b"+OK hi\r\n"),
        (true, &noops),
        (true, b"STAT\r\n"),
        (false, b"+OK\r\n"),
        (true, b"RETR 1\r\n"),
        (false, &oks),
        (false, b"+OK 1 5\r\n"),
        (false, b"+OK 5 octets\r\nbody\r\n.\r\n"),
    ];
    let sim = harness::play(&reads, harness::TOLERATED);
    let retr = sim.events().iter().find_map(|e| match e {
        harness::Ev::S(popfault::codec::ServerEvent::Status { cmd: popfault::codec::Command::Retr(1), .. }, b) => {
            Some(b.clone())
        }
        _ => None,
    });
    // Past the bound the codec stops framing (the rest is relayed as
    // Untracked): STAT's answer is never taken for RETR's.
    assert!(retr.is_none() || retr.as_deref() == Some(&b"+OK 5 octets\r\n"[..]), "RETR misattributed: {retr:?}");
    assert!(sim.events().iter().any(|e| matches!(e, harness::Ev::S(popfault::codec::ServerEvent::Untracked, _))));
}
