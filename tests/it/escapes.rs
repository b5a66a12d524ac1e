//! Terminal escapes from the wire never reach a terminal: a client and a
//! server put ESC sequences in every field they can influence (command
//! keywords, user names, SASL mechanisms, the greeting, status lines, UIDs,
//! Message-IDs); the real binary's
//! stdout (the summary table), its stderr at -vvv and the events file hold
//! no raw ESC byte.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::line_server;
use crate::support::proc::Proc;

/// Clear the screen, set the window title, colour red, CSI as one C1 byte.
const ESC: &str = "\x1b[2J\x1b]0;owned\x07\x1b[31m\u{9b}1m";

/// A server that puts `ESC` in its greeting and every answer, in the UIDL
/// listing and in the Message-ID of every message.
async fn hostile_server() -> std::net::SocketAddr {
    line_server(format!("+OK {ESC} ready <1.2@x{ESC}>\r\n"), |lines| {
        let text = lines.last().unwrap().to_ascii_uppercase();
        if text.starts_with("RETR") {
            format!("+OK {ESC}\r\nMessage-ID: <{ESC}@x>\r\nSubject: {ESC}\r\n\r\n{ESC}\r\n.\r\n")
        } else if text == "UIDL" {
            format!("+OK {ESC}\r\n1 uid{ESC}\r\n.\r\n")
        } else if text == "QUIT" {
            format!("+OK bye {ESC}\r\n")
        } else if text.starts_with("AUTH") {
            format!("-ERR {ESC}\r\n")
        } else {
            format!("+OK {ESC}\r\n")
        }
    })
    .await
}

/// Where a raw ESC or a C1 CSI (U+009B, as UTF-8) is, with some context.
fn raw_esc(bytes: &[u8]) -> Option<String> {
    let esc = bytes.iter().position(|&b| b == 0x1b);
    let csi = bytes.windows(2).position(|w| w == [0xc2, 0x9b]);
    let at = esc.into_iter().chain(csi).min()?;
    let from = at.saturating_sub(60);
    Some(String::from_utf8_lossy(&bytes[from..(at + 20).min(bytes.len())]).into_owned())
}

#[test]
fn wire_escapes_never_reach_a_terminal() {
    let dir = std::env::temp_dir().join(format!("popfault-escapes-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let events = dir.join("events.jsonl");
    let profile = dir.join("evil.toml");
    // A rule that fires on every answer, so fault lines are logged too.
    // (A profile cannot name anything with a control character: refused
    // at load.)
    std::fs::write(
        &profile,
        "name = \"evil\"\n[[rule]]\nname = \"slow\"\nwhen = \"response\"\nrepeat = true\n\
         actions = [{ do = \"delay\", ms = 1 }]\n",
    )
    .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let upstream = rt.block_on(hostile_server());
    // NO_COLOR: the log's own colour codes are not from the wire (plain
    // logs when stderr is not a terminal are another change's).
    let (proxy, addr) = Proc::proxy_with(
        upstream,
        &["--drain", "1", "--profile", profile.to_str().unwrap(), "--events", events.to_str().unwrap(), "-vvv"],
        &[("POPFAULT_LOG", "trace"), ("NO_COLOR", "1")],
        None,
    );
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), async {
            let lines = [
                ESC.to_string(),
                format!("{ESC} arg"),
                "USER alice".into(),
                format!("USER al{ESC}ice"),
                format!("USER {ESC}"),
                format!("PASS {ESC}"),
                "UIDL".into(),
                "RETR 1".into(),
                format!("RETR {ESC}"),
                format!("AUTH {ESC}"),
                format!("AUTH X{ESC} {ESC}"),
                format!("APOP {ESC} 0123456789abcdef0123456789abcdef"),
                "QUIT".into(),
            ];
            let mut s = TcpStream::connect(addr).await.unwrap();
            for line in lines {
                s.write_all(format!("{line}\r\n").as_bytes()).await.unwrap();
                // One at a time: every answer is delivered before the next line.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            assert!(String::from_utf8_lossy(&got).contains("+OK bye"), "the session ran to its QUIT");
        })
        .await
        .expect("the session in time")
    });
    let out = proxy.stop();
    let events_bytes = std::fs::read(&events).unwrap();
    let events_text = String::from_utf8_lossy(&events_bytes);
    // The run is real: the rule fired and the summary was printed.
    assert!(out.contains("popfault summary"), "summary printed:\n{out}");
    assert!(out.contains("session ended"), "trace logs present");
    assert!(events_text.contains("\"event\":\"fault\""), "the rule fired:\n{events_text}");
    for (what, bytes) in [("stdout and stderr", out.as_bytes()), ("events file", &events_bytes[..])] {
        if let Some(around) = raw_esc(bytes) {
            panic!("a raw escape byte reached the {what}: …{around:?}…");
        }
    }
    assert!(events_text.contains("\"user\":\"(invalid)\""), "the odd user name is not kept:\n{events_text}");
    let _ = std::fs::remove_dir_all(&dir);
}
