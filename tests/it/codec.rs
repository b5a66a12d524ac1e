//! The codec against recorded transcripts: split at every offset, the events
//! are the same; random pipelined streams never panic and frame right.

use popfault::codec::{ClientEvent, Command, Pop3Codec, ServerEvent};
use proptest::prelude::*;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Ev {
    C(ClientEvent, Vec<u8>),
    S(ServerEvent, Vec<u8>),
}

thread_local! {
    /// Relay an incomplete line at once (`pass_*`) instead of keeping it,
    /// as the relay does when no rule needs the whole line.
    static PASS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Feeds one direction's chunk the way the relay does: append to a buffer,
/// take every complete event, keep the rest for the next read (or pass it
/// on, in `PASS` mode).
fn feed_client(codec: &mut Pop3Codec, buf: &mut Vec<u8>, chunk: &[u8], out: &mut Vec<Ev>) {
    buf.extend_from_slice(chunk);
    loop {
        let step = codec.decode_client(buf);
        if step.consumed == 0 {
            assert!(step.event.is_none());
            break;
        }
        let ev = step.event.expect("an event with consumed bytes");
        if let ClientEvent::Command { cmd, .. } = &ev {
            codec.forwarded(cmd);
        }
        out.push(Ev::C(ev, buf[..step.consumed].to_vec()));
        buf.drain(..step.consumed);
    }
    if PASS.get() && !buf.is_empty() {
        let step = codec.pass_client(buf);
        assert_eq!((step.consumed, step.event), (buf.len(), Some(ClientEvent::LinePart)));
        out.push(Ev::C(ClientEvent::LinePart, std::mem::take(buf)));
    }
}

fn feed_server(codec: &mut Pop3Codec, buf: &mut Vec<u8>, chunk: &[u8], out: &mut Vec<Ev>) {
    buf.extend_from_slice(chunk);
    loop {
        let step = codec.decode_server(buf);
        if step.consumed == 0 {
            break;
        }
        let ev = step.event.expect("an event with consumed bytes");
        out.push(Ev::S(ev, buf[..step.consumed].to_vec()));
        buf.drain(..step.consumed);
    }
    if PASS.get() && !buf.is_empty() {
        let step = codec.pass_server(buf);
        assert_eq!((step.consumed, step.event), (buf.len(), Some(ServerEvent::LinePart)));
        out.push(Ev::S(ServerEvent::LinePart, std::mem::take(buf)));
    }
}

/// Merges consecutive pieces of one body / one over-long line, so that
/// chunking (which only changes how often bytes are handed back) compares
/// equal.
fn coalesce(events: Vec<Ev>) -> Vec<Ev> {
    let mut out: Vec<Ev> = Vec::new();
    // A passed line start joins the event of its line's end.
    let (mut cpart, mut spart) = (Vec::new(), Vec::new());
    for ev in events {
        let ev = match ev {
            Ev::C(ClientEvent::LinePart, b) => {
                cpart.extend_from_slice(&b);
                continue;
            }
            Ev::S(ServerEvent::LinePart, b) => {
                spart.extend_from_slice(&b);
                continue;
            }
            Ev::C(e, b) if !cpart.is_empty() => {
                cpart.extend_from_slice(&b);
                Ev::C(e, std::mem::take(&mut cpart))
            }
            Ev::S(e, b) if !spart.is_empty() => {
                spart.extend_from_slice(&b);
                Ev::S(e, std::mem::take(&mut spart))
            }
            ev => ev,
        };
        if let Some(last) = out.last_mut() {
            match (last, &ev) {
                // Offsets are checked by `body_offsets_are_contiguous`.
                (Ev::S(ServerEvent::Body { end: e1, .. }, b1), Ev::S(ServerEvent::Body { end, .. }, b2)) if !*e1 => {
                    *e1 = *end;
                    b1.extend_from_slice(b2);
                    continue;
                }
                (
                    Ev::S(ServerEvent::OverlongStart | ServerEvent::OverlongMore, b1),
                    Ev::S(ServerEvent::OverlongMore, b2),
                )
                | (
                    Ev::C(ClientEvent::OverlongStart | ClientEvent::OverlongMore, b1),
                    Ev::C(ClientEvent::OverlongMore, b2),
                ) => {
                    b1.extend_from_slice(b2);
                    continue;
                }
                // The pieces of an over-long command end in the command.
                (
                    last @ Ev::C(ClientEvent::OverlongStart | ClientEvent::OverlongMore, _),
                    Ev::C(ClientEvent::Command { overlong: true, .. }, b2),
                ) => {
                    let Ev::C(_, b1) = last else { unreachable!() };
                    let mut bytes = std::mem::take(b1);
                    bytes.extend_from_slice(b2);
                    let Ev::C(cmd, _) = ev else { unreachable!() };
                    *last = Ev::C(cmd, bytes);
                    continue;
                }
                _ => {}
            }
        }
        out.push(ev);
    }
    out
}

/// Runs a transcript of (from_client, bytes) segments, each cut into chunks
/// by `cuts` (offsets within that segment).
fn run(transcript: &[(bool, &[u8])], cuts: &dyn Fn(usize, usize) -> Vec<usize>) -> Vec<Ev> {
    let mut codec = Pop3Codec::new();
    let (mut cbuf, mut sbuf) = (Vec::new(), Vec::new());
    let mut out = Vec::new();
    for (i, (from_client, bytes)) in transcript.iter().enumerate() {
        let mut points = cuts(i, bytes.len());
        points.push(bytes.len());
        let mut start = 0;
        for p in points {
            let p = p.clamp(start, bytes.len());
            if *from_client {
                feed_client(&mut codec, &mut cbuf, &bytes[start..p], &mut out);
            } else {
                feed_server(&mut codec, &mut sbuf, &bytes[start..p], &mut out);
            }
            start = p;
        }
    }
    // Nothing is left unframed at the end of a complete transcript.
    assert!(cbuf.is_empty() && sbuf.is_empty(), "left over: {cbuf:?} {sbuf:?}");
    out
}

fn whole(transcript: &[(bool, &[u8])]) -> Vec<Ev> {
    coalesce(run(transcript, &|_, _| vec![]))
}

fn body_offsets_are_contiguous(events: &[Ev]) {
    let mut expect = 0u64;
    for ev in events {
        match ev {
            Ev::S(ServerEvent::Body { offset, end, .. }, bytes) => {
                assert_eq!(*offset, expect, "body offsets must continue");
                expect = if *end { 0 } else { offset + bytes.len() as u64 };
            }
            Ev::S(ServerEvent::Status { multiline: true, .. }, _) => expect = 0,
            _ => {}
        }
    }
}

/// Splitting every segment at every offset gives the same framing, and
/// single-byte chunks too.
fn check_split_invariance(transcript: &[(bool, &[u8])]) {
    let reference = whole(transcript);
    let ones = run(transcript, &|_, len| (1..len).collect());
    body_offsets_are_contiguous(&ones);
    assert_eq!(coalesce(ones), reference, "1-byte chunks");
    // Never holding a byte: each incomplete line relayed at once.
    PASS.set(true);
    let passed = run(transcript, &|_, len| (1..len).collect());
    let halves = run(transcript, &|_, len| vec![len / 2]);
    PASS.set(false);
    assert!(passed.iter().any(|e| matches!(e, Ev::C(ClientEvent::LinePart, _) | Ev::S(ServerEvent::LinePart, _))));
    assert_eq!(coalesce(passed), reference, "1-byte chunks, each relayed at once");
    assert_eq!(coalesce(halves), reference, "halves, each relayed at once");
    for seg in 0..transcript.len() {
        for at in 1..transcript[seg].1.len() {
            let split = run(transcript, &|i, _| if i == seg { vec![at] } else { vec![] });
            body_offsets_are_contiguous(&split);
            assert_eq!(coalesce(split), reference, "segment {seg} split at {at}");
        }
    }
}

const GREETING: &[u8] = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n";

/// An RFC 1939 session: login, listing, a byte-stuffed retrieval, DELE, QUIT.
fn rfc1939_session() -> Vec<(bool, &'static [u8])> {
    vec![
        (false, GREETING),
        (true, b"USER mrose\r\n"),
        (false, b"+OK mrose is a real hoopy frood\r\n"),
        (true, b"PASS tanstaaf\r\n"),
        (false, b"+OK mrose's maildrop has 2 messages (320 octets)\r\n"),
        (true, b"STAT\r\nLIST\r\n"),
        (false, b"+OK 2 320\r\n+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"),
        (true, b"RETR 1\r\n"),
        (false, b"+OK 120 octets\r\nMessage-ID: <1@x>\r\n\r\n..leading dot\r\n.\r\n.\r\n..\r\nend\r\n.\r\n"),
        (true, b"DELE 1\r\nRETR 2\r\n"),
        (false, b"+OK message 1 deleted\r\n+OK 200 octets\r\nbody\r\n.\r\n"),
        (true, b"QUIT\r\n"),
        (false, b"+OK dewey POP3 server signing off (1 message left)\r\n"),
    ]
}

#[test]
fn rfc1939_transcript_is_split_invariant() {
    let t = rfc1939_session();
    check_split_invariance(&t);
    let events = whole(&t);
    let statuses: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Ev::S(ServerEvent::Status { cmd, multiline, .. }, _) => Some((cmd.clone(), *multiline)),
            _ => None,
        })
        .collect();
    assert_eq!(
        statuses,
        vec![
            (Command::User("mrose".into()), false),
            (Command::Pass, false),
            (Command::Stat, false),
            (Command::List(None), true),
            (Command::Retr(1), true),
            (Command::Dele(1), false),
            (Command::Retr(2), true),
            (Command::Quit, false),
        ]
    );
    // The stuffed body of RETR 1 ends only at the final ".\r\n", not at
    // the lone "." line's stuffed neighbours.
    let body: Vec<u8> = events
        .iter()
        .skip_while(|e| !matches!(e, Ev::S(ServerEvent::Status { cmd: Command::Retr(1), .. }, _)))
        .skip(1)
        .take_while(|e| matches!(e, Ev::S(ServerEvent::Body { .. }, _)))
        .flat_map(|e| match e {
            Ev::S(_, b) => b.clone(),
            _ => vec![],
        })
        .collect();
    assert_eq!(body, b"Message-ID: <1@x>\r\n\r\n..leading dot\r\n.\r\n".to_vec());
}

/// SASL: continuation lines and the client's responses are framed as such
/// (never as commands); `*` cancels; then commands again.
#[test]
fn sasl_exchange_is_split_invariant() {
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"CAPA\r\n"),
        (false, b"+OK\r\nSASL PLAIN LOGIN\r\nPIPELINING\r\n.\r\n"),
        (true, b"AUTH LOGIN\r\n"),
        (false, b"+ VXNlcm5hbWU6\r\n"),
        (true, b"*\r\n"),
        (false, b"-ERR cancelled\r\n"),
        (true, b"AUTH PLAIN\r\n"),
        (false, b"+ \r\n"),
        (true, b"AGFsaWNlAHNlY3JldA==\r\n"),
        (false, b"+OK logged in\r\n"),
        (true, b"UIDL\r\n"),
        (false, b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n.\r\n"),
    ];
    check_split_invariance(&t);
    let events = whole(&t);
    assert!(events.contains(&Ev::C(ClientEvent::SaslResponse { cancel: true }, b"*\r\n".to_vec())));
    assert!(events.contains(&Ev::C(ClientEvent::SaslResponse { cancel: false }, b"AGFsaWNlAHNlY3JldA==\r\n".to_vec())));
    assert_eq!(events.iter().filter(|e| matches!(e, Ev::S(ServerEvent::Continuation, _))).count(), 2);
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::S(ServerEvent::Status { cmd: Command::Uidl(None), multiline: true, .. }, _)))
    );
}

/// After STLS +OK everything is opaque in both directions.
#[test]
fn stls_turns_opaque() {
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"STLS\r\n"),
        (false, b"+OK begin TLS\r\n\x16\x03\x01\x00\x05hello"),
        (true, b"\x16\x03\x01\x02\x00\r\n.\r\nRETR 1\r\n"),
    ];
    let events = whole(&t);
    assert_eq!(events[3], Ev::S(ServerEvent::Opaque, b"\x16\x03\x01\x00\x05hello".to_vec()));
    assert!(matches!(events.last(), Some(Ev::C(ClientEvent::Opaque, _))));
}

/// Over-long lines are relayed whole, flagged, and do not derail framing.
#[test]
fn overlong_lines_are_relayed_and_flagged() {
    let long_cmd = [b"NOOP ".to_vec(), vec![b'x'; 400], b"\r\n".to_vec()].concat();
    let long_status = [b"+OK ".to_vec(), vec![b'y'; 700], b"\r\n".to_vec()].concat();
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, &long_cmd),
        (false, &long_status),
        (true, b"STAT\r\n"),
        (false, b"+OK 1 2\r\n"),
    ];
    let events = whole(&t);
    let relayed: Vec<u8> = events
        .iter()
        .filter_map(|e| match e {
            Ev::C(_, b) => Some(b.clone()),
            _ => None,
        })
        .flatten()
        .collect();
    assert_eq!(relayed, [long_cmd.clone(), b"STAT\r\n".to_vec()].concat());
    assert!(
        events.iter().any(|e| matches!(e, Ev::C(ClientEvent::Command { overlong: true, .. }, b) if b == &long_cmd))
    );
    // The over-long status still answers its command, flagged.
    assert!(
        events
            .iter()
            .any(|e| matches!(e, Ev::S(ServerEvent::Status { status, .. }, b) if status.overlong && b.len() == 512))
    );
    // Split invariance holds for over-long lines too (byte for byte).
    assert!(events.iter().any(|e| matches!(e, Ev::S(ServerEvent::Status { cmd: Command::Stat, .. }, _))));
    check_split_invariance(&t);
}

/// 50 pipelined commands in one write; their responses in one write: each
/// response is attributed to its command, in order.
#[test]
fn pipelined_responses_are_attributed_in_order() {
    let mut cmds = Vec::new();
    let mut resps = Vec::new();
    let mut expect = Vec::new();
    for i in 1..=50u32 {
        let (c, r, cmd): (String, String, Command) = match i % 5 {
            0 => (format!("RETR {i}\r\n"), format!("+OK\r\nline {i}\r\n..dot\r\n.\r\n"), Command::Retr(i)),
            1 => ("UIDL\r\n".into(), format!("+OK\r\n1 u{i}\r\n.\r\n"), Command::Uidl(None)),
            2 => (format!("DELE {i}\r\n"), "-ERR no such message\r\n".into(), Command::Dele(i)),
            3 => (format!("LIST {i}\r\n"), format!("+OK {i} 100\r\n"), Command::List(Some(i))),
            _ => ("NOOP\r\n".into(), "+OK\r\n".into(), Command::Noop),
        };
        cmds.extend_from_slice(c.as_bytes());
        resps.extend_from_slice(r.as_bytes());
        expect.push((cmd, i as u64 + 1));
    }
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"CAPA\r\n"),
        (false, b"+OK\r\nPIPELINING\r\n.\r\n"),
        (true, &cmds),
        (false, &resps),
    ];
    let events = whole(&t);
    let got: Vec<(Command, u64)> = events
        .iter()
        .filter_map(|e| match e {
            Ev::S(ServerEvent::Status { cmd, seq, .. }, _) if *seq > 1 => Some((cmd.clone(), *seq)),
            _ => None,
        })
        .collect();
    assert_eq!(got, expect);
    check_split_invariance(&t);
}

/// A multi-line response is never assumed for an unknown command.
#[test]
fn unknown_command_response_is_single_line() {
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"XTND XMIT\r\n"),
        (false, b"+OK\r\n"),
        (true, b"NOOP\r\n"),
        (false, b"+OK\r\n"),
    ];
    let events = whole(&t);
    assert!(events.iter().any(|e| matches!(e, Ev::S(ServerEvent::Status { cmd: Command::Noop, .. }, _))));
}

// === property tests ===

/// A random well-formed exchange: commands and a server that answers them,
/// bodies with dot lines and arbitrary bytes.
fn exchange() -> impl Strategy<Value = (Vec<u8>, Vec<u8>, Vec<(String, bool)>)> {
    let body_line = prop_oneof![
        proptest::collection::vec(any::<u8>().prop_filter("no LF", |b| *b != b'\n'), 0..40),
        Just(b".".to_vec()),
        Just(b".x".to_vec()),
        Just(b"..".to_vec()),
    ];
    let item = (0u8..6, proptest::collection::vec(body_line, 0..6), any::<bool>());
    proptest::collection::vec(item, 1..30).prop_map(|items| {
        let (mut up, mut down, mut expect) = (Vec::new(), b"+OK ready\r\n".to_vec(), Vec::new());
        for (kind, lines, ok) in items {
            // An unknown keyword is labelled OTHER: its text is not kept.
            let (name, label) = match kind {
                0 => ("RETR 1", "RETR"),
                1 => ("TOP 1 5", "TOP"),
                2 => ("LIST", "LIST"),
                3 => ("STAT", "STAT"),
                4 => ("UIDL", "UIDL"),
                _ => ("XFOO", "OTHER"),
            };
            up.extend_from_slice(format!("{name}\r\n").as_bytes());
            let multi = ok && matches!(kind, 0 | 1 | 2 | 4);
            if ok {
                down.extend_from_slice(b"+OK go\r\n");
            } else {
                down.extend_from_slice(b"-ERR no\r\n");
            }
            if multi {
                for l in &lines {
                    // Byte-stuff as a server must.
                    if l.first() == Some(&b'.') {
                        down.push(b'.');
                    }
                    down.extend_from_slice(l);
                    down.extend_from_slice(b"\r\n");
                }
                down.extend_from_slice(b".\r\n");
            }
            expect.push((label.to_string(), multi));
        }
        (up, down, expect)
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    /// Pipelined: the client sends everything, then the server answers
    /// everything, in random chunks. Each response lands on its command.
    #[test]
    fn random_pipelines_frame_correctly((up, down, expect) in exchange(), cuts in proptest::collection::vec(1usize..64, 0..40)) {
        let chunks = |len: usize| {
            let mut pts = Vec::new();
            let mut p = 0;
            for c in &cuts { p += c; if p < len { pts.push(p) } }
            pts
        };
        let t: Vec<(bool, &[u8])> = vec![(true, &up), (false, &down)];
        // The greeting arrives first in real life; here commands are
        // forwarded before it, which the queue handles the same way.
        let split = run(&t, &|i, len| if i == 0 { chunks(len) } else { chunks(len).into_iter().rev().map(|x| len - x).rev().collect() });
        let got: Vec<(String, bool)> = split.iter().filter_map(|e| match e {
            Ev::S(ServerEvent::Status { cmd, multiline, .. }, _) => Some((cmd.name().to_string(), *multiline)),
            _ => None,
        }).collect();
        prop_assert_eq!(&got, &expect);
        let relayed: Vec<u8> = split.iter().filter_map(|e| match e { Ev::S(_, b) => Some(b.clone()), _ => None }).flatten().collect();
        prop_assert_eq!(relayed, down.clone());
        prop_assert_eq!(coalesce(split), whole(&t));
    }

    /// Arbitrary bytes both ways never panic, and every byte is accounted
    /// for exactly once (nothing lost, nothing duplicated).
    #[test]
    fn arbitrary_bytes_never_panic(segments in proptest::collection::vec((any::<bool>(), proptest::collection::vec(any::<u8>(), 0..700)), 0..20)) {
        let t: Vec<(bool, &[u8])> = segments.iter().map(|(c, b)| (*c, b.as_slice())).collect();
        let mut codec = Pop3Codec::new();
        let (mut cbuf, mut sbuf, mut out) = (Vec::new(), Vec::new(), Vec::new());
        for (from_client, bytes) in &t {
            if *from_client { feed_client(&mut codec, &mut cbuf, bytes, &mut out) } else { feed_server(&mut codec, &mut sbuf, bytes, &mut out) }
            prop_assert!(cbuf.len() < popfault::codec::MAX_COMMAND_LINE);
            prop_assert!(sbuf.len() < popfault::codec::MAX_STATUS_LINE);
        }
        let up: Vec<u8> = t.iter().filter(|s| s.0).flat_map(|s| s.1.to_vec()).collect();
        let relayed_up: Vec<u8> = out.iter().filter_map(|e| match e { Ev::C(_, b) => Some(b.clone()), _ => None }).flatten().collect();
        prop_assert_eq!(&relayed_up[..], &up[..relayed_up.len()]);
        prop_assert_eq!(relayed_up.len() + cbuf.len(), up.len());
    }
}

/// Commands pipelined after `AUTH PLAIN <initial response>` stay commands
/// (Dovecot answers them); a line after a "+ " continuation is SASL data.
#[test]
fn pipelined_after_auth_with_initial_response() {
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"AUTH PLAIN AHUAcA==\r\nUIDL 1\r\nQUIT\r\n"),
        (false, b"+OK Logged in.\r\n+OK 1 abc\r\n+OK bye\r\n"),
    ];
    check_split_invariance(&t);
    let events = whole(&t);
    let answered: Vec<Command> = events
        .iter()
        .filter_map(|e| match e {
            Ev::S(ServerEvent::Status { cmd, .. }, _) => Some(cmd.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        answered,
        vec![Command::Auth { mechanism: Some("PLAIN"), initial_response: true }, Command::Uidl(Some(1)), Command::Quit]
    );
    // AUTH LOGIN with the user name up front: the server still asks for the
    // password, and the line that answers it is SASL, never a command.
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"AUTH LOGIN dXNlcg==\r\n"),
        (false, b"+ UGFzc3dvcmQ6\r\n"),
        (true, b"c2VjcmV0\r\n"),
        (false, b"+OK\r\n"),
        (true, b"STAT\r\n"),
        (false, b"+OK 0 0\r\n"),
    ];
    check_split_invariance(&t);
    let events = whole(&t);
    assert!(events.contains(&Ev::C(ClientEvent::SaslResponse { cancel: false }, b"c2VjcmV0\r\n".to_vec())));
    assert!(events.iter().any(|e| matches!(e, Ev::S(ServerEvent::Status { cmd: Command::Stat, .. }, _))));
}

/// A pipelining client sends AUTH LOGIN, its user and its password at once,
/// before the server's continuations: both lines are SASL data, never
/// commands (a password parsed as a command reached the summary), and the
/// QUIT after them is still a command whose +OK is seen.
#[test]
fn pipelined_auth_login_responses_are_sasl() {
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"AUTH LOGIN\r\ndXNlcg==\r\nc2VjcmV0\r\nQUIT\r\n"),
        (false, b"+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n+OK logged in\r\n+OK bye\r\n"),
    ];
    check_split_invariance(&t);
    let events = whole(&t);
    let sasl = events.iter().filter(|e| matches!(e, Ev::C(ClientEvent::SaslResponse { .. }, _))).count();
    assert_eq!(sasl, 2, "{events:?}");
    let answered: Vec<Command> = events
        .iter()
        .filter_map(|e| match e {
            Ev::S(ServerEvent::Status { cmd, .. }, _) => Some(cmd.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(answered, vec![Command::Auth { mechanism: Some("LOGIN"), initial_response: false }, Command::Quit]);
    // A mechanism the codec does not know: every line until the final
    // answer is SASL data.
    let t: Vec<(bool, &[u8])> = vec![
        (false, b"+OK hi\r\n"),
        (true, b"AUTH X-SECRET-MECH\r\nc2VjcmV0\r\nbW9yZQ==\r\n"),
        (false, b"+ \r\n+ \r\n+OK\r\n"),
        (true, b"STAT\r\n"),
        (false, b"+OK 0 0\r\n"),
    ];
    check_split_invariance(&t);
    let events = whole(&t);
    assert_eq!(events.iter().filter(|e| matches!(e, Ev::C(ClientEvent::SaslResponse { .. }, _))).count(), 2);
    assert!(events.iter().any(|e| matches!(e, Ev::S(ServerEvent::Status { cmd: Command::Stat, .. }, _))));
}

/// POP3S sent to a plain port: the TLS ClientHello comes before any
/// greeting. The stream is recognised as TLS and relayed opaquely both
/// ways, never framed as POP3 lines (which would hold its bytes).
#[test]
fn a_tls_handshake_is_opaque_from_the_first_byte() {
    let hello: &[u8] = b"\x16\x03\x01\x00\xa5\x01\x00\x00\xa1\x03\x03no newline here";
    let t: Vec<(bool, &[u8])> = vec![(true, hello), (false, b"\x16\x03\x03\x00\x7a\x02\x00\x00\x76\x03\x03\n+OK")];
    let events = whole(&t);
    assert!(
        events.iter().all(|e| matches!(e, Ev::C(ClientEvent::Opaque, _) | Ev::S(ServerEvent::Opaque, _))),
        "{events:?}"
    );
    let mut codec = Pop3Codec::new();
    assert_eq!(codec.decode_client(&hello[..1]).event, Some(ClientEvent::Opaque), "known from its first byte");
    assert!(codec.greeted(), "no greeting will come: the greeting timeout must not cut it");
    // Only a stream's first bytes: a 0x16 later is just a byte.
    let mut codec = Pop3Codec::new();
    codec.decode_server(b"+OK hi\r\n");
    assert_eq!(
        codec.decode_client(b"\x16\x03\r\n").event.map(|e| matches!(e, ClientEvent::Command { .. })),
        Some(true)
    );
}
