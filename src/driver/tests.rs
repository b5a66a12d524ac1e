//! The driver with byte scripts and made-up instants: no socket, no clock,
//! no task. `Sim` plays the shell: it feeds reads, carries out every
//! `Transmit` (a wait moves the clock), and records what each side got.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Accept, ClientStls, Dir, Driver, RunInfo, SessionInfo, Transmit};
use crate::events::{Event, SessionEnd};
use crate::faults::{Engine, How, Profile, builtin};
use crate::session::Outcome;

// === the simulated shell ===

thread_local! {
    /// Sessions made by `Sim` keep a transcript.
    static TRANSCRIPTS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
    /// Sessions made by `Sim` end the client's TLS themselves (`ClientStls::Answer`).
    static STLS: std::cell::Cell<ClientStls> = const { std::cell::Cell::new(ClientStls::Relay) };
}

struct Sim {
    d: Driver,
    now: Instant,
    /// Per direction: bytes read and not consumed.
    input: [Vec<u8>; 2],
    /// Per direction: what reached its destination.
    out: [Vec<u8>; 2],
    /// Per direction: the sizes of the writes, in order.
    writes: [Vec<usize>; 2],
    /// How each direction last stopped: Eof or Stop, if it did.
    ended: [Option<Transmit>; 2],
    events: Vec<Event>,
    start: Instant,
}

fn profile(toml: &str) -> Profile {
    Profile::from_toml(toml, "test.toml", "test").unwrap_or_else(|e| panic!("{e}"))
}

fn built_in(name: &str) -> Profile {
    builtin::builtin(name).expect("a built-in").unwrap_or_else(|e| panic!("{e}"))
}

/// A session's driver, numbered `number`, for a run that began at
/// `run_started`; the session begins at `started`.
fn driver(profile: Profile, seed: u64, number: u64, run_started: Instant, started: Instant) -> Driver {
    let run = RunInfo {
        upstream: "upstream:110".into(),
        run_started,
        idle_timeout: Duration::from_secs(600),
        greeting_timeout: Duration::from_secs(30),
        wants_progress: false,
        transcripts: TRANSCRIPTS.get(),
        client_stls: STLS.get(),
    };
    let info = SessionInfo { number, peer: ([127, 0, 0, 1], 40000).into(), seed, started, run: Arc::new(run) };
    Driver::new(info, Engine::new(Arc::new(profile), seed, number))
}

impl Sim {
    fn new(profile: Profile) -> Sim {
        Sim::numbered(profile, 1, 1)
    }

    fn numbered(profile: Profile, seed: u64, number: u64) -> Sim {
        let start = Instant::now();
        let mut d = driver(profile, seed, number, start, start);
        assert_eq!(d.accept(start), Accept::Connect);
        let mut sim = Sim {
            d,
            now: start,
            input: [Vec::new(), Vec::new()],
            out: [Vec::new(), Vec::new()],
            writes: [Vec::new(), Vec::new()],
            ended: [None, None],
            events: Vec::new(),
            start,
        };
        sim.events.extend(sim.d.take_events());
        sim
    }

    /// The client sends `bytes`.
    fn c(&mut self, bytes: &[u8]) -> &mut Self {
        self.feed(Dir::Up, bytes)
    }

    /// The server sends `bytes`.
    fn s(&mut self, bytes: &[u8]) -> &mut Self {
        self.feed(Dir::Down, bytes)
    }

    fn feed(&mut self, dir: Dir, bytes: &[u8]) -> &mut Self {
        self.input[dir as usize].extend_from_slice(bytes);
        self.d.read(dir, bytes.len(), self.now);
        self.run(dir);
        // What one direction did may have queued output for the other.
        self.run(if dir == Dir::Up { Dir::Down } else { Dir::Up });
        self
    }

    /// Carries out `dir`'s transmits until it needs input or ends.
    fn run(&mut self, dir: Dir) {
        let i = dir as usize;
        for _ in 0..100_000 {
            let t = self.d.poll_transmit(dir, &self.input[i], self.now);
            self.events.extend(self.d.take_events());
            match t {
                Transmit::Write(r) => {
                    self.out[i].extend_from_slice(&self.input[i][r.clone()]);
                    self.writes[i].push(r.len());
                    self.d.written(dir, &self.input[i], self.now);
                }
                Transmit::Own(bytes) => {
                    self.out[i].extend_from_slice(&bytes);
                    self.writes[i].push(bytes.len());
                    self.d.written(dir, &self.input[i], self.now);
                }
                Transmit::Wait(at) => {
                    assert!(at > self.now, "a wait in the past");
                    self.now = at;
                }
                Transmit::Consumed(n) => {
                    self.input[i].drain(..n);
                }
                Transmit::NeedMore => return,
                t @ (Transmit::Eof | Transmit::Stop | Transmit::StartTls) => {
                    self.ended[i] = Some(t);
                    return;
                }
            }
        }
        panic!("the driver never asked for more input");
    }

    /// The clock moves to `ms` after accept; due timers run.
    fn at_ms(&mut self, ms: u64) -> &mut Self {
        self.now = self.start + Duration::from_millis(ms);
        self.d.handle_timeout(self.now);
        self.events.extend(self.d.take_events());
        self.run(Dir::Down);
        self.run(Dir::Up);
        self
    }

    fn up(&self) -> &[u8] {
        &self.out[0]
    }

    fn down(&self) -> &[u8] {
        &self.out[1]
    }

    fn end(&mut self) -> SessionEnd {
        let events = self.d.finish(None, self.now);
        self.events.extend(events);
        match self.events.last() {
            Some(Event::SessionEnd(end)) => (**end).clone(),
            other => panic!("no session end: {other:?}"),
        }
    }

    fn fault_points(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| match e {
                Event::Fault { point, .. } => Some(point.clone()),
                _ => None,
            })
            .collect()
    }

    /// Logged in as user1 with `n` messages announced.
    fn login(&mut self) -> &mut Self {
        self.s(b"+OK ready\r\n").c(b"USER user1\r\n").s(b"+OK\r\n").c(b"PASS secret\r\n").s(b"+OK 3 messages\r\n")
    }
}

/// A multi-line RETR answer whose body is `body` (already stuffed).
fn retr_answer(body: &[u8]) -> Vec<u8> {
    let mut a = format!("+OK {} octets\r\n", body.len()).into_bytes();
    a.extend_from_slice(body);
    a.extend_from_slice(b".\r\n");
    a
}

const BODY: &[u8] = b"Message-ID: <1@x>\r\nSubject: s\r\n\r\n..stuffed line\r\nsecond line\r\n";

// === relaying ===

#[test]
fn a_whole_session_is_relayed_byte_exact_and_committed() {
    let mut s = Sim::new(Profile::passthrough());
    s.login().c(b"STAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n");
    let answers = [&b"+OK 1 100\r\n"[..], &retr_answer(BODY), b"+OK marked\r\n", b"+OK bye\r\n"].concat();
    s.s(&answers);
    let up = b"USER user1\r\nPASS secret\r\nSTAT\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n";
    assert_eq!(s.up(), up);
    let mut down = b"+OK ready\r\n+OK\r\n+OK 3 messages\r\n".to_vec();
    down.extend_from_slice(&answers);
    assert_eq!(s.down(), &down[..]);
    let end = s.end();
    assert_eq!(end.outcome, Outcome::Committed);
    assert_eq!((end.downloaded, end.marked, end.bytes_up, end.bytes_down), (1, 1, up.len() as u64, down.len() as u64));
}

#[test]
fn every_chunking_gives_the_same_bytes_and_outcome() {
    let answers = [&b"+OK ready\r\n+OK\r\n+OK 2\r\n"[..], &retr_answer(BODY), b"+OK bye\r\n"].concat();
    let commands = b"USER u\r\nPASS p\r\nRETR 1\r\nQUIT\r\n";
    let whole = {
        let mut s = Sim::new(Profile::passthrough());
        s.s(b"+OK ready\r\n").c(commands).s(&answers[11..]);
        (s.up().to_vec(), s.down().to_vec(), s.end().outcome)
    };
    for at in 1..answers.len() {
        let mut s = Sim::new(Profile::passthrough());
        s.c(commands);
        s.s(&answers[..at]).s(&answers[at..]);
        assert_eq!((s.up().to_vec(), s.down().to_vec(), s.end().outcome), whole, "split at {at}");
    }
}

#[test]
fn pipelined_answers_are_attributed_in_order() {
    let mut s = Sim::new(Profile::passthrough());
    s.s(b"+OK hi\r\n").c(b"USER a\r\nPASS b\r\nLIST\r\nUIDL 1\r\nDELE 1\r\nQUIT\r\n");
    s.s(b"+OK\r\n+OK\r\n+OK\r\n1 10\r\n.\r\n+OK 1 abc\r\n+OK\r\n+OK bye\r\n");
    let end = s.end();
    assert_eq!(end.outcome, Outcome::Committed);
    assert_eq!(end.marked, 1);
}

#[test]
fn pipelined_auth_login_is_sasl_and_quit_is_seen() {
    let mut s = Sim::new(Profile::passthrough());
    s.s(b"+OK hi\r\n").c(b"AUTH LOGIN\r\ndXNlcg==\r\nc2VjcmV0\r\nQUIT\r\n");
    s.s(b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK in\r\n+OK bye\r\n");
    assert_eq!(s.end().outcome, Outcome::CleanQuit, "QUIT's +OK was seen as QUIT's");
}

#[test]
fn after_stls_both_ways_are_opaque() {
    let mut s = Sim::new(Profile::passthrough());
    s.s(b"+OK hi\r\n").c(b"STLS\r\n").s(b"+OK go ahead\r\n");
    s.c(b"\x16\x03\x01\x00\x05hello").s(b"\x16\x03\x03\x00\x02hi");
    assert!(s.up().ends_with(b"\x16\x03\x01\x00\x05hello"));
    assert!(s.down().ends_with(b"\x16\x03\x03\x00\x02hi"));
    assert!(s.end().encrypted);
}

/// A session whose client TLS popfault ends itself (`--client-tls stls`).
fn stls_here(profile: Profile) -> Sim {
    with_stls(ClientStls::Answer, profile)
}

fn with_stls(mode: ClientStls, profile: Profile) -> Sim {
    STLS.set(mode);
    let s = Sim::new(profile);
    STLS.set(ClientStls::Relay);
    s
}

#[test]
fn stls_here_holds_its_lines_and_its_turn() {
    // `STLS ` then its end, in two reads: still popfault's, never forwarded.
    let mut s = stls_here(Profile::passthrough());
    s.s(b"+OK ready\r\n").c(b"STLS ").c(b"\r\n");
    assert_eq!(s.up(), b"", "held whole");
    assert!(s.down().ends_with(b"+OK Begin TLS negotiation now\r\n"));
    // Pipelined after a login: the login may succeed first, so no.
    let mut s = stls_here(Profile::passthrough());
    s.s(b"+OK ready\r\n").c(b"USER a\r\nPASS b\r\nSTLS\r\n").s(b"+OK\r\n+OK in\r\n");
    assert!(
        s.down().ends_with(b"+OK in\r\n-ERR STLS only before login\r\n"),
        "{:?}",
        String::from_utf8_lossy(s.down())
    );
    assert_eq!(s.ended, [None, None], "no handshake");
    // After login, CAPA is the server's own.
    s.c(b"CAPA\r\n").s(b"+OK\r\nUIDL\r\n.\r\n");
    assert!(s.down().ends_with(b"+OK\r\nUIDL\r\n.\r\n"), "no STLS offered in TRANSACTION");
    // A stall at STLS holds popfault's own answer too.
    let stall = "[[rule]]\nwhen = \"command\"\ncommand = \"STLS\"\nactions = [{ do = \"stall\", ms = 700 }]\n";
    let mut s = stls_here(profile(stall));
    s.s(b"+OK ready\r\n").c(b"STLS\r\n");
    assert!(s.down().ends_with(b"+OK Begin TLS negotiation now\r\n"));
    assert!(s.now.duration_since(s.start) >= Duration::from_millis(700), "the +OK waited for the stall");
}

#[test]
fn stls_refused_by_popfault_is_never_forwarded() {
    let mut s = with_stls(ClientStls::Refuse, Profile::passthrough());
    s.s(b"+OK ready\r\n").c(b"CAPA\r\n").s(b"+OK\r\nSTLS\r\n.\r\n").c(b"STLS\r\nUSER a\r\n").s(b"+OK\r\n");
    assert_eq!(s.up(), b"CAPA\r\nUSER a\r\n");
    assert_eq!(s.down(), b"+OK ready\r\n+OK\r\nSTLS\r\n.\r\n-ERR STLS not available here\r\n+OK\r\n");
    assert!(!s.end().encrypted);
}

#[test]
fn stls_here_is_offered_answered_and_the_session_stays_readable() {
    let mut s = stls_here(Profile::passthrough());
    s.s(b"+OK ready\r\n").c(b"CAPA\r\n").s(b"+OK caps\r\nUSER\r\nUIDL\r\n.\r\n");
    assert_eq!(s.down(), b"+OK ready\r\n+OK caps\r\nSTLS\r\nUSER\r\nUIDL\r\n.\r\n", "STLS offered");
    // Sent a byte at a time: held until it is STLS, never forwarded.
    for b in b"STLS\r\n" {
        s.c(&[*b]);
    }
    assert_eq!(s.up(), b"CAPA\r\n", "STLS is popfault's to answer");
    assert!(s.down().ends_with(b"+OK Begin TLS negotiation now\r\n"));
    assert_eq!(s.ended, [Some(Transmit::StartTls), Some(Transmit::StartTls)], "both pumps end for the handshake");

    // The handshake (the shell's) is done: the session goes on, readable.
    s.d.tls_started(s.now);
    s.ended = [None, None];
    s.c(b"CAPA\r\n").s(b"+OK caps\r\nUSER\r\n.\r\n");
    assert!(s.down().ends_with(b"+OK caps\r\nUSER\r\n.\r\n"), "no STLS offered inside TLS");
    s.c(b"STLS\r\n");
    assert!(s.down().ends_with(b"-ERR TLS is already active\r\n"));
    assert_eq!(s.up(), b"CAPA\r\nCAPA\r\n", "a second STLS is not forwarded either");
    s.c(b"USER user1\r\n").s(b"+OK\r\n").c(b"PASS secret\r\n").s(b"+OK in\r\n");
    s.c(b"RETR 1\r\nDELE 1\r\nQUIT\r\n").s(&retr_answer(BODY)).s(b"+OK marked\r\n+OK bye\r\n");
    assert_eq!(s.ended, [None, None]);
    let end = s.end();
    assert!(!end.encrypted, "popfault saw inside the TLS");
    assert_eq!((end.outcome, end.downloaded, end.marked), (Outcome::Committed, 1, 1));
}

#[test]
fn stls_here_keeps_other_lines_and_rules_as_they_were() {
    // A line that cannot be STLS is not held for it.
    let mut s = stls_here(Profile::passthrough());
    s.s(b"+OK ready\r\n").c(b"US");
    assert_eq!(s.up(), b"US");
    // A rule at STLS still fires before popfault answers it.
    let cut = "[[rule]]\nwhen = \"command\"\ncommand = \"STLS\"\nactions = [{ do = \"disconnect\" }]\n";
    let mut s = stls_here(profile(cut));
    s.s(b"+OK ready\r\n").c(b"STLS\r\n");
    assert_eq!(s.ended, [Some(Transmit::Stop), Some(Transmit::Stop)]);
    assert_eq!(s.down(), b"+OK ready\r\n");
}

#[test]
fn a_partial_line_goes_on_unless_a_rule_may_want_it_whole() {
    let mut s = Sim::new(Profile::passthrough());
    s.s(b"+OK hel");
    assert_eq!(s.down(), b"+OK hel", "the greeting's start went on");
    s.c(b"NO");
    assert_eq!(s.up(), b"NO");
    let quit = "[[rule]]\nwhen = \"command\"\ncommand = \"QUIT\"\nactions = [{ do = \"swallow\" }]\n";
    let mut s = Sim::new(profile(quit));
    s.s(b"+OK hi\r\n").c(b"QU");
    assert_eq!(s.up(), b"", "QU may be QUIT: held");
    s.c(b"IT\r\nNO");
    assert_eq!(s.up(), b"NO", "QUIT swallowed whole; NO went on before its end");
}

// === body cuts at exact offsets ===

/// A body rule cutting after exactly `at` body bytes.
fn cut_at(at: u64) -> Profile {
    profile(&format!(
        "[[rule]]\nname = \"cut\"\nwhen = \"body\"\ncommand = \"RETR\"\noffset = {at}\nactions = [{{ do = \"disconnect\", side = \"both\", how = \"rst\" }}]\n"
    ))
}

#[test]
fn body_cuts_land_on_the_exact_byte() {
    let answer = retr_answer(BODY);
    let status_len = answer.iter().position(|&b| b == b'\n').unwrap() + 1;
    let cr = BODY.iter().position(|&b| b == b'\r').unwrap() as u64;
    let stuffed = BODY.windows(2).position(|w| w == b"..").unwrap() as u64 + 1;
    // 0, 1, between CR and LF, inside a stuffed line.
    for at in [0, 1, cr + 1, stuffed] {
        for chunked in [false, true] {
            let mut s = Sim::new(cut_at(at));
            s.login().c(b"RETR 1\r\n");
            let before = s.down().len();
            if chunked {
                for b in &answer {
                    s.s(&[*b]);
                }
            } else {
                s.s(&answer);
            }
            let got = &s.down()[before..];
            assert_eq!(got, &answer[..status_len + at as usize], "cut at {at}, chunked {chunked}");
            assert!(s.d.is_stopped());
            assert_eq!(s.d.close(), Some((How::Rst, How::Rst)));
            let end = s.end();
            // Nothing marked, nothing downloaded whole: nothing to roll back.
            assert_eq!(end.outcome, Outcome::NothingAtStake);
            assert_eq!(end.downloaded, 0, "a message cut midway is not a download");
            assert_eq!(end.ended_by, "fault: cut");
            // Part of the message reached the client unless the cut came
            // before its first body byte.
            assert_eq!(end.delivery.cut_midway, u64::from(at > 0), "cut at {at}");
            assert_eq!(end.delivery.damaged, 0);
        }
    }
}

#[test]
fn lost_carrier_at_quit_is_in_doubt() {
    let mut s = Sim::new(built_in("lost-carrier-at-quit"));
    s.login().c(b"DELE 1\r\n").s(b"+OK\r\n").c(b"QUIT\r\n").s(b"+OK bye\r\n");
    assert!(!s.down().ends_with(b"+OK bye\r\n"), "the answer never reached the client");
    assert_eq!(s.d.close(), Some((How::Rst, How::Fin)));
    let end = s.end();
    assert_eq!((end.outcome, end.at_risk), (Outcome::InDoubt, 1));
}

#[test]
fn lost_carrier_cuts_the_third_retr_halfway_when_selected() {
    // The rule picks half the sessions; find one it picks.
    let picked = (1..50)
        .find(|&n| {
            let mut s = Sim::numbered(built_in("lost-carrier"), 7, n);
            s.login();
            for i in 1..=3 {
                s.c(format!("RETR {i}\r\n").as_bytes()).s(&retr_answer(BODY));
            }
            s.d.is_stopped()
        })
        .expect("some session is selected");
    let mut s = Sim::numbered(built_in("lost-carrier"), 7, picked);
    s.login();
    for i in 1..=3 {
        s.c(format!("RETR {i}\r\nDELE {i}\r\n").as_bytes()).s(&retr_answer(BODY)).s(b"+OK\r\n");
    }
    let end = s.end();
    assert_eq!((end.outcome, end.downloaded, end.marked), (Outcome::RolledBack, 2, 2));
    assert_eq!(end.at_risk, 2);
    assert_eq!(s.fault_points().len(), 1);
}

// === effects ===

#[test]
fn a_line_speed_paces_the_writes() {
    // 8,000 bit/s = 1,000 bytes a second, in slices of 50 bytes.
    let slow = "[[rule]]\nwhen = \"greeting\"\nactions = [{ do = \"throttle\", bps = 8000 }]\n";
    let mut s = Sim::new(profile(slow));
    let t0 = s.now;
    s.login().c(b"RETR 1\r\n");
    let body: Vec<u8> = (0..3996).map(|i| b"abcdefghij\r\n"[i % 12]).collect();
    s.s(&retr_answer(&body));
    assert!(s.writes[1].iter().all(|&n| n <= 50), "slices of 50 bytes at most");
    let sent = s.down().len() as f64;
    let took = s.now.duration_since(t0).as_secs_f64();
    assert!((took - sent / 1000.0).abs() < 0.2, "{sent} bytes took {took} s at 1000 B/s");
    assert_eq!(s.end().downloaded, 1);
}

#[test]
fn a_stall_holds_both_ways_then_resumes() {
    let stall = "[[rule]]\nwhen = \"command\"\ncommand = \"STAT\"\nactions = [{ do = \"stall\", ms = 1500 }]\n";
    let mut s = Sim::new(profile(stall));
    s.login();
    let t0 = s.now;
    s.c(b"STAT\r\n");
    assert_eq!(s.now.duration_since(t0), Duration::from_millis(1500), "STAT waited 1.5 s");
    assert!(s.up().ends_with(b"STAT\r\n"));
}

#[test]
fn noise_goes_toward_its_side_before_the_next_bytes() {
    let noise = "[[rule]]\nwhen = \"status\"\ncommand = \"STAT\"\nactions = [{ do = \"noise\", bytes = 7, toward = \"client\" }]\n";
    let mut s = Sim::new(profile(noise));
    s.login().c(b"STAT\r\n");
    let before = s.down().len();
    s.s(b"+OK 1 10\r\n");
    let got = &s.down()[before..];
    assert_eq!(got.len(), 7 + 10, "7 noise bytes, then the answer");
    assert!(got.ends_with(b"+OK 1 10\r\n"));
    let end = s.end();
    assert_eq!(end.bytes_down as usize, s.down().len(), "noise counts as bytes written");
    assert_eq!(end.delivery.damaged, 0, "noise between answers damages no message");
}

#[test]
fn corruption_flips_exactly_the_next_bytes() {
    let corrupt = "[[rule]]\nwhen = \"status\"\ncommand = \"RETR\"\nactions = [{ do = \"corrupt\", bytes = 4 }]\n";
    let mut s = Sim::new(profile(corrupt));
    s.login().c(b"RETR 1\r\n");
    let before = s.down().len();
    let answer = retr_answer(BODY);
    s.s(&answer);
    let got = &s.down()[before..];
    assert_eq!(got.len(), answer.len());
    let differ: Vec<usize> = got.iter().zip(&answer).enumerate().filter(|(_, (a, b))| a != b).map(|(i, _)| i).collect();
    assert!(!differ.is_empty() && differ.iter().all(|&i| i < 4), "only the first 4 bytes changed: {differ:?}");
    let end = s.end();
    assert_eq!((end.delivery.damaged, end.delivery.cut_midway), (1, 0), "one message delivered damaged");
}

#[test]
fn reply_answers_in_turn_and_swallow_never_answers() {
    let faults = "[[rule]]\nwhen = \"command\"\ncommand = \"RETR\"\nactions = [{ do = \"reply\", text = \"-ERR [IN-USE] locked\" }]\n\n\
                  [[rule]]\nwhen = \"command\"\ncommand = \"NOOP\"\nactions = [{ do = \"swallow\" }]\n";
    let mut s = Sim::new(profile(faults));
    s.login();
    let up_before = s.up().len();
    let down_before = s.down().len();
    s.c(b"STAT\r\nRETR 1\r\nNOOP\r\nLIST 1\r\n");
    assert_eq!(&s.up()[up_before..], b"STAT\r\nLIST 1\r\n", "RETR and NOOP never reach the server");
    s.s(b"+OK 1 10\r\n+OK 1 10\r\n");
    assert_eq!(&s.down()[down_before..], b"+OK 1 10\r\n-ERR [IN-USE] locked\r\n+OK 1 10\r\n");
}

#[test]
fn a_delay_comes_before_each_answer() {
    let delay = "[[rule]]\nwhen = \"greeting\"\nactions = [{ do = \"delay\", ms = 200 }]\n";
    let mut s = Sim::new(profile(delay));
    s.login();
    let t0 = s.now;
    s.c(b"NOOP\r\n").s(b"+OK\r\n");
    assert_eq!(s.now.duration_since(t0), Duration::from_millis(200));
}

// === time ===

#[test]
fn a_timer_rule_fires_at_its_time() {
    let timer = "[[rule]]\nname = \"t\"\nwhen = \"timer\"\nafter_ms = 1000\nactions = [{ do = \"disconnect\", side = \"both\", how = \"fin\" }]\n";
    let mut s = Sim::new(profile(timer));
    s.login();
    assert_eq!(s.d.poll_timeout(), s.start + Duration::from_millis(1000));
    s.at_ms(999);
    assert!(!s.d.is_stopped());
    s.at_ms(1000);
    assert!(s.d.is_stopped());
    assert_eq!(s.d.close(), Some((How::Fin, How::Fin)));
    assert_eq!(s.fault_points(), vec!["timer @1000ms".to_string()]);
    assert_eq!(s.end().ended_by, "fault: t");
}

#[test]
fn no_greeting_and_idle_timeouts() {
    let mut s = Sim::new(Profile::passthrough());
    assert_eq!(s.d.poll_timeout(), s.start + Duration::from_secs(30));
    s.at_ms(30_000);
    assert!(s.d.is_stopped());
    assert_eq!(s.end().ended_by, "no greeting from upstream within 30s");

    let mut s = Sim::new(Profile::passthrough());
    s.login();
    assert_eq!(s.d.poll_timeout(), s.start + Duration::from_secs(600));
    s.at_ms(600_000);
    assert_eq!(s.end().ended_by, "idle timeout");
}

#[test]
fn a_manual_cut_is_a_lost_carrier_now() {
    let mut s = Sim::new(Profile::passthrough());
    s.login().c(b"RETR 1\r\n");
    s.d.cut_manual(s.now);
    assert_eq!(s.d.close(), Some((How::Rst, How::Rst)));
    let end = s.end();
    assert_eq!((end.ended_by.as_str(), end.faults.as_slice()), ("fault: manual", &["manual".to_string()][..]));
    // Shown as "fault manual: disconnect at k (dashboard)", not "… at manual".
    assert_eq!(s.fault_points(), ["k (dashboard)"]);
}

#[test]
fn who_ended_first_is_named() {
    let mut s = Sim::new(Profile::passthrough());
    s.login();
    s.d.read(Dir::Up, 0, s.now);
    s.d.write_failed(Dir::Down);
    assert_eq!(s.end().ended_by, "closed by client", "the failed write came after the client's FIN");
    let mut s = Sim::new(Profile::passthrough());
    s.login();
    s.d.write_failed(Dir::Down);
    assert_eq!(s.end().ended_by, "reset by client");
}

#[test]
fn eof_passes_held_bytes_then_the_fin() {
    let quit = "[[rule]]\nwhen = \"command\"\ncommand = \"QUIT\"\nactions = [{ do = \"swallow\" }]\n";
    let mut s = Sim::new(profile(quit));
    s.s(b"+OK hi\r\n").c(b"QU");
    s.d.read(Dir::Up, 0, s.now);
    s.run(Dir::Up);
    assert_eq!(s.up(), b"QU", "what was held goes on at EOF");
    assert_eq!(s.ended[0], Some(Transmit::Eof));
}

#[test]
fn truncate_ends_the_body_early_and_drops_the_rest() {
    let truncate = "[[rule]]\nname = \"short\"\nwhen = \"body\"\ncommand = \"RETR\"\noffset = 5\nactions = [{ do = \"truncate\" }]\n";
    for split in [false, true] {
        let mut s = Sim::new(profile(truncate));
        s.login().c(b"RETR 1\r\nNOOP\r\n");
        let before = s.down().len();
        let answer = retr_answer(BODY);
        if split {
            // The rest of the body comes in a later read: dropped too.
            s.s(&answer[..30]).s(&answer[30..]);
        } else {
            s.s(&answer);
        }
        s.s(b"+OK noop\r\n");
        let status = answer.iter().position(|&b| b == b'\n').unwrap() + 1;
        let mut want = answer[..status + 5].to_vec();
        want.extend_from_slice(b"\r\n.\r\n+OK noop\r\n");
        assert_eq!(&s.down()[before..], &want[..], "split {split}");
        assert!(!s.d.is_stopped());
        let end = s.end();
        assert_eq!(end.downloaded, 1, "the client got a whole (short) message");
        assert_eq!(end.delivery.damaged, 1, "truncated: delivered, but not as the server sent it");
        assert_eq!(end.bytes_down as usize, s.down().len());
    }
}

// === each built-in profile at the driver level ===

/// A session of `name` that downloads `n` messages and quits, for sessions
/// 1..=tries: the first (session, Sim) where `pred` holds.
fn find_session(name: &str, n: u32, tries: u64, pred: impl Fn(&mut Sim) -> bool) -> Option<(u64, Sim)> {
    (1..=tries).find_map(|number| {
        let mut s = Sim::numbered(built_in(name), 11, number);
        s.login();
        for i in 1..=n {
            s.c(format!("RETR {i}\r\n").as_bytes()).s(&retr_answer(BODY));
        }
        s.c(b"QUIT\r\n").s(b"+OK bye\r\n");
        if pred(&mut s) { Some((number, s)) } else { None }
    })
}

#[test]
fn passthrough_changes_nothing() {
    let (_, mut s) = find_session("passthrough", 3, 1, |_| true).expect("a session");
    assert!(s.fault_points().is_empty());
    assert_eq!(s.end().outcome, Outcome::CleanQuit);
}

#[test]
fn server_down_variants_refuse_at_accept() {
    let start = Instant::now();
    for (name, want) in [("server-down", "rst"), ("server-down-err", "err"), ("server-down-hang", "hang")] {
        let mut d = driver(built_in(name), 1, 1, start, start);
        match d.accept(start) {
            Accept::Refuse { how, .. } => assert_eq!(format!("{how:?}").to_lowercase(), want, "{name}"),
            other => panic!("{name}: {other:?}"),
        }
        let events = d.finish(Some("refused".into()), start);
        let Some(Event::SessionEnd(end)) = events.last() else { panic!("no end") };
        assert_eq!(end.outcome, Outcome::Refused, "{name}");
    }
}

#[test]
fn server_flapping_refuses_only_in_its_down_windows() {
    let start = Instant::now();
    let accept_at = |ms: u64| {
        let now = start + Duration::from_millis(ms);
        let mut d = driver(built_in("server-flapping"), 1, 1, start, now);
        matches!(d.accept(now), Accept::Refuse { .. })
    };
    assert!(accept_at(0) && accept_at(2_999) && accept_at(10_500), "down 3 s of every 10 s");
    assert!(!accept_at(3_000) && !accept_at(9_999));
}

#[test]
fn busy_mailbox_answers_pass_itself() {
    let mut s = Sim::new(built_in("busy-mailbox"));
    s.s(b"+OK hi\r\n").c(b"USER u\r\nPASS p\r\n").s(b"+OK\r\n");
    assert_eq!(s.up(), b"USER u\r\n", "PASS never reaches the server");
    assert_eq!(s.down(), b"+OK hi\r\n+OK\r\n-ERR [IN-USE] maildrop locked by another session\r\n");
    assert_eq!(s.end().outcome, Outcome::NoLogin);
}

#[test]
fn modem_28k8_paces_and_delays() {
    let mut s = Sim::new(built_in("modem-28k8"));
    let t0 = s.now;
    s.login().c(b"RETR 1\r\n");
    let body: Vec<u8> = (0..3584).map(|i| b"abcdefghijklmnopqrstuvwxyz\r\n"[i % 28]).collect();
    s.s(&retr_answer(&body));
    // 28,800 bit/s = 3,600 bytes a second, plus ~150 ms before each answer.
    let took = s.now.duration_since(t0).as_secs_f64();
    assert!(took > 3600.0 / 3600.0 && took < 3.0, "about a second for 3.6 KB and four delays: {took}");
    assert!(s.writes[1].iter().all(|&n| n <= 180), "slices of ~50 ms at 3,600 B/s");
    assert_eq!(s.end().downloaded, 1);
}

#[test]
fn call_waiting_stalls_then_sends_noise_and_sometimes_drops() {
    // A session whose tone rang: a stall, 24 noise bytes into a body.
    let (_, s) = find_session("call-waiting", 3, 200, |s| !s.fault_points().is_empty()).expect("a tone");
    assert!(s.fault_points().iter().all(|p| p.starts_with("body RETR")), "{:?}", s.fault_points());
    let (_, mut dropped) =
        find_session("call-waiting", 3, 400, |s| s.d.is_stopped()).expect("a tone that dropped the line");
    assert_eq!(dropped.end().outcome, Outcome::RolledBack);
    let (_, mut noisy) = find_session("call-waiting", 3, 400, |s| !s.fault_points().is_empty() && !s.d.is_stopped())
        .expect("a tone that did not drop the line");
    let end = noisy.end();
    assert_eq!(end.outcome, Outcome::CleanQuit);
    assert!(end.delivery.damaged >= 1, "the tone's noise went into a message: {:?}", end.delivery);
    assert!(end.bytes_down as usize >= noisy.down().len(), "noise counted");
}

#[test]
fn flaky_line_mixes_faults_deterministically() {
    let run = |number| {
        let mut s = Sim::numbered(built_in("flaky-line"), 5, number);
        s.login();
        for i in 1..=5 {
            s.c(format!("RETR {i}\r\n").as_bytes()).s(&retr_answer(BODY));
        }
        s.c(b"QUIT\r\n").s(b"+OK bye\r\n");
        (s.fault_points(), s.down().to_vec(), s.end().outcome)
    };
    let runs: Vec<_> = (1..=60).map(run).collect();
    assert_eq!(runs, (1..=60).map(run).collect::<Vec<_>>(), "the same seed replays the same faults");
    assert!(runs.iter().any(|r| !r.0.is_empty()), "some faults fired in 60 sessions");
    assert!(runs.iter().any(|r| r.0.is_empty()), "some sessions went clean");
}

// === any bytes, any chunking ===

mod properties {
    use proptest::prelude::*;

    use super::*;

    /// Fragments that make POP3-looking streams with their edge cases:
    /// pipelined commands, multi-line answers, stuffed lines, bare LF,
    /// SASL, STLS, binary.
    fn piece() -> impl Strategy<Value = Vec<u8>> {
        prop_oneof![
            Just(b"+OK hi\r\n".to_vec()),
            Just(b"USER u\r\nPASS p\r\n".to_vec()),
            Just(b"RETR 1\r\n".to_vec()),
            Just(b"+OK 10 octets\r\n".to_vec()),
            Just(b"..stuffed\r\n".to_vec()),
            Just(b".\r\n".to_vec()),
            Just(b"AUTH LOGIN\r\n".to_vec()),
            Just(b"+ VXNlcm5hbWU6\r\n".to_vec()),
            Just(b"QUIT\r\n".to_vec()),
            Just(b"-ERR no\r\n".to_vec()),
            Just(b"\n".to_vec()),
            prop::collection::vec(any::<u8>(), 0..40),
        ]
    }

    fn stream() -> impl Strategy<Value = Vec<u8>> {
        prop::collection::vec(piece(), 0..12).prop_map(|v| v.concat())
    }

    /// Feeds both streams through the driver, interleaved in chunks of the
    /// given sizes, then closes both sides.
    fn play(mut s: Sim, up: &[u8], down: &[u8], sizes: &[usize]) -> Sim {
        let (mut u, mut d) = (0, 0);
        let mut k = 0;
        // Until both streams are fed, or a fault cut the session.
        while (u < up.len() || d < down.len()) && !s.d.is_stopped() {
            let n = sizes[k % sizes.len()].max(1);
            k += 1;
            if k % 2 == 0 && u < up.len() {
                let end = (u + n).min(up.len());
                s.c(&up[u..end]);
                u = end;
            } else if d < down.len() {
                let end = (d + n).min(down.len());
                s.s(&down[d..end]);
                d = end;
            } else {
                let end = (u + n).min(up.len());
                s.c(&up[u..end]);
                u = end;
            }
        }
        for dir in [Dir::Up, Dir::Down] {
            s.d.read(dir, 0, s.now);
            s.run(dir);
        }
        s
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Whatever either peer sends, however it is chunked, the relay is
        /// byte-exact with no fault in force, and the bytes counted are the
        /// bytes written.
        #[test]
        fn passthrough_is_byte_exact(up in stream(), down in stream(), sizes in prop::collection::vec(1usize..64, 1..6)) {
            let mut s = play(Sim::new(Profile::passthrough()), &up, &down, &sizes);
            prop_assert_eq!(s.up(), &up[..]);
            prop_assert_eq!(s.down(), &down[..]);
            let end = s.end();
            prop_assert_eq!((end.bytes_up as usize, end.bytes_down as usize), (up.len(), down.len()));
        }

        /// With faults that only change timing (and rules that hold lines
        /// whole), still byte-exact; the waits end.
        #[test]
        fn timing_faults_keep_every_byte(up in stream(), down in stream(), sizes in prop::collection::vec(1usize..64, 1..6)) {
            let profile = profile(
                "[[rule]]\nwhen = \"greeting\"\nactions = [{ do = \"throttle\", bps = 80000 }, { do = \"delay\", ms = 5 }]\n\n\
                 [[rule]]\nwhen = \"command\"\ncommand = \"QUIT\"\nrepeat = true\nactions = [{ do = \"stall\", ms = 3 }]\n\n\
                 [[rule]]\nwhen = \"status\"\ncommand = \"RETR\"\nrepeat = true\nactions = [{ do = \"stall\", ms = 2 }]\n",
            );
            let mut s = play(Sim::new(profile), &up, &down, &sizes);
            prop_assert_eq!(s.up(), &up[..]);
            prop_assert_eq!(s.down(), &down[..]);
            let end = s.end();
            prop_assert_eq!((end.bytes_up as usize, end.bytes_down as usize), (up.len(), down.len()));
        }

        /// Every built-in profile that lets a session through (the
        /// server-down ones refuse at accept: `server_down_variants…`), for
        /// many sessions, any bytes: no panic, and the bytes counted are
        /// the bytes written.
        #[test]
        fn builtins_never_panic(up in stream(), down in stream(), sizes in prop::collection::vec(1usize..64, 1..6), which in 0usize..7, number in 1u64..200) {
            let names = ["passthrough", "lost-carrier", "lost-carrier-at-quit", "call-waiting", "modem-28k8", "flaky-line", "busy-mailbox"];
            let mut s = play(Sim::numbered(built_in(names[which]), 3, number), &up, &down, &sizes);
            let (up_out, down_out) = (s.up().len(), s.down().len());
            let end = s.end();
            prop_assert_eq!((end.bytes_up as usize, end.bytes_down as usize), (up_out, down_out));
        }
    }
}

#[test]
fn a_transcript_tells_the_session_and_keeps_no_secret() {
    TRANSCRIPTS.set(true);
    let mut s = Sim::new(cut_at(5));
    TRANSCRIPTS.set(false);
    s.s(b"+OK ready\r\n").c(b"USER user1\r\n").s(b"+OK\r\n").c(b"PASS Hunter-Teal-77\r\n").s(b"+OK 3 messages\r\n");
    s.c(b"RETR 1\r\n").s(&retr_answer(BODY));
    let _ = s.end();
    let lines: Vec<String> = s.d.take_transcript();
    let text = lines.join("\n");
    for want in [
        "S: +OK ready",
        "C: USER user1",
        "C: PASS ***",
        "C: RETR 1",
        "S: +OK ",
        "fault cut: disconnect at body RETR 1 #3 @5",
        "S: (body cut off after 5 bytes)",
        "end: nothing-at-stake (fault: cut)",
    ] {
        assert!(text.contains(want), "{want:?} in:\n{text}");
    }
    assert!(!text.contains("Hunter-Teal-77"), "{text}");
    // Lines are timed from the session's start.
    assert!(
        lines.iter().all(|l| l.trim_start().split_once("s  ").is_some_and(|(t, _)| t.parse::<f64>().is_ok())),
        "{text}"
    );
    // Off by default: nothing kept.
    let mut quiet = Sim::new(Profile::passthrough());
    quiet.login();
    assert!(quiet.d.take_transcript().is_empty());
}

#[test]
fn latency_samples_go_out_in_bursts_or_after_a_quarter_second() {
    let mut s = Sim::new(built_in("passthrough"));
    let sent = |s: &Sim| s.events.iter().filter(|e| matches!(e, Event::Latency { .. })).count();
    // USER and PASS answered at once: held for a burst.
    s.login();
    assert_eq!(sent(&s), 0);
    s.at_ms(100).c(b"NOOP\r\n").s(b"+OK\r\n");
    assert_eq!(sent(&s), 0, "100 ms: still held");
    // A quarter of a second since the accept: the four go out.
    s.at_ms(300).c(b"NOOP\r\n").s(b"+OK\r\n");
    assert_eq!(sent(&s), 4);
    s.at_ms(400).c(b"NOOP\r\n").s(b"+OK\r\n");
    assert_eq!(sent(&s), 4, "100 ms since the last send");
    s.at_ms(550).c(b"NOOP\r\n").s(b"+OK\r\n");
    assert_eq!(sent(&s), 6, "250 ms since the last send");
    // Many answers at one instant: sent by the burst, not one by one.
    s.at_ms(600);
    for _ in 0..15 {
        s.c(b"NOOP\r\n").s(b"+OK\r\n");
    }
    assert_eq!(sent(&s), 6);
    s.c(b"NOOP\r\n").s(b"+OK\r\n");
    assert_eq!(sent(&s), 22, "sixteen held: a burst");
    s.c(b"NOOP\r\n").s(b"+OK\r\n");
    s.end();
    assert_eq!(sent(&s), 23, "the rest at the end");
}

// === limit and linger (Toxiproxy's limit_data and slow_close) ===

#[test]
fn limit_closes_after_exactly_that_many_bytes_that_way() {
    let p = profile("[[rule]]\nwhen = \"accept\"\nactions = [{ do = \"limit\", bytes = 12, toward = \"client\" }]\n");
    let mut s = Sim::new(p);
    s.s(b"+OK ready\r\n").c(b"USER user1\r\n");
    assert_eq!(s.up(), b"USER user1\r\n", "the other way is not counted");
    s.s(b"+OK welcome\r\n");
    assert_eq!(s.down(), b"+OK ready\r\n+");
    assert_eq!(s.ended[1], Some(Transmit::Stop));
    assert_eq!(s.end().ended_by, "fault: accept-1");
}

#[test]
fn linger_holds_the_close_and_not_the_bytes() {
    let p = profile("[[rule]]\nwhen = \"accept\"\nactions = [{ do = \"linger\", ms = 500 }]\n");
    let mut s = Sim::new(p);
    s.s(b"+OK ready\r\n");
    assert_eq!(s.down(), b"+OK ready\r\n");
    let before = s.now;
    s.d.read(Dir::Down, 0, s.now);
    s.run(Dir::Down);
    assert_eq!(s.ended[1], Some(Transmit::Eof));
    assert_eq!(s.now - before, Duration::from_millis(500));
    // The client's close is not held.
    let before = s.now;
    s.d.read(Dir::Up, 0, s.now);
    s.run(Dir::Up);
    assert_eq!((s.ended[0].clone(), s.now), (Some(Transmit::Eof), before));
}
