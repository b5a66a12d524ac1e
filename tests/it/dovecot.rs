//! Sanity tests against a real Dovecot POP3 server (no proxy yet): the test
//! support starts, seeds, serves and stops it, and Dovecot keeps DELE'd
//! messages until QUIT. Each test starts its own instance; without Dovecot
//! they print a SKIPPED line and pass, unless POPFAULT_REQUIRE_DOVECOT=1.

use std::collections::HashSet;
use std::future::Future;
use std::time::{Duration, Instant};

use crate::support::LIMIT;
use crate::support::dovecot::Dovecot;
use popfault::client::{ClientError, Pop3Client, extract_message_id};

async fn bounded<F: Future>(f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f).await.expect("test finished in time")
}

async fn logged_in(dovecot: &Dovecot) -> Pop3Client {
    let (mut client, greeting) = Pop3Client::connect(dovecot.addr).await.expect("connect");
    assert!(greeting.starts_with("+OK"), "greeting {greeting:?}");
    client.login(&dovecot.user, &dovecot.password).await.expect("login");
    client
}

fn ids(range: impl IntoIterator<Item = usize>) -> Vec<String> {
    range.into_iter().map(Dovecot::message_id).collect()
}

#[tokio::test]
async fn dovecot_starts_and_serves_pop3() {
    let Some(dovecot) = Dovecot::start(5) else { return };
    bounded(async {
        let mut client = logged_in(&dovecot).await;
        let (count, size) = client.stat().await.expect("STAT");
        assert_eq!(count, 5);
        let seeded: u64 = (1..=5).map(|n| Dovecot::seeded_message(n).len() as u64).sum();
        assert_eq!(size, seeded, "CRLF files: octets on the wire = bytes on disk");

        let uidl = client.uidl().await.expect("UIDL");
        assert_eq!(uidl.iter().map(|(n, _)| *n).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
        assert_eq!(uidl.iter().map(|(_, u)| u).collect::<HashSet<_>>().len(), 5, "unique UIDLs: {uidl:?}");
        assert!(uidl.iter().all(|(_, u)| u.len() == 16), "%08Xu%08Xv UIDLs: {uidl:?}");

        let first = client.retr(1).await.expect("RETR 1");
        assert_eq!(extract_message_id(&first).as_deref(), Some("<dovecot-1@popfault.test>"));
        for n in 1..=5 {
            let got = client.retr(n).await.expect("RETR");
            assert_eq!(got, Dovecot::seeded_message(n as usize), "RETR {n} unstuffed = the seeded bytes");
        }
        client.quit().await.expect("QUIT");
    })
    .await;
    assert_eq!(dovecot.remaining(), 5);
    assert_eq!(dovecot.message_ids(), ids(1..=5));
}

#[tokio::test]
async fn dovecot_keeps_marked_messages_without_quit() {
    let Some(dovecot) = Dovecot::start(3) else { return };
    bounded(async {
        let mut client = logged_in(&dovecot).await;
        client.dele(1).await.expect("DELE 1");
        client.dele(3).await.expect("DELE 3");
        assert_eq!(client.stat().await.expect("STAT").0, 1, "marked messages are hidden in the session");
        drop(client); // the line drops: no QUIT

        dovecot.wait_idle().await;
        assert_eq!(dovecot.remaining(), 3, "nothing deleted without QUIT");
        assert_eq!(dovecot.message_ids(), ids(1..=3));

        let mut again = logged_in(&dovecot).await;
        assert_eq!(again.stat().await.expect("STAT").0, 3, "all messages come again");
        again.quit().await.expect("QUIT");
    })
    .await;
    assert_eq!(dovecot.remaining(), 3);
}

#[tokio::test]
async fn dovecot_deletes_after_quit() {
    let Some(dovecot) = Dovecot::start(3) else { return };
    bounded(async {
        let mut client = logged_in(&dovecot).await;
        client.dele(1).await.expect("DELE 1");
        client.dele(3).await.expect("DELE 3");
        client.quit().await.expect("QUIT +OK");
        // Dovecot expunges before it answers QUIT: no waiting needed.
        assert_eq!(dovecot.remaining(), 1);
        assert_eq!(dovecot.message_ids(), ids([2]));

        let mut again = logged_in(&dovecot).await;
        assert_eq!(again.stat().await.expect("STAT").0, 1);
        let only = again.retr(1).await.expect("RETR 1");
        assert_eq!(only, Dovecot::seeded_message(2));
        again.quit().await.expect("QUIT");
    })
    .await;
}

/// SASL PLAIN both ways, and a wrong password is refused quickly (the config
/// turns off the failure delay and the per-IP penalty) without slowing the
/// next, correct login.
#[tokio::test]
async fn dovecot_auth_plain_and_fast_failures() {
    let Some(dovecot) = Dovecot::start(2) else { return };
    bounded(async {
        let (mut client, _) = Pop3Client::connect(dovecot.addr).await.expect("connect");
        let capa = client.capa().await.expect("CAPA");
        assert!(capa.iter().any(|c| c == "UIDL"), "CAPA {capa:?}");
        assert!(capa.iter().any(|c| c.starts_with("SASL") && c.contains("PLAIN")), "CAPA {capa:?}");
        for _ in 0..2 {
            let started = Instant::now();
            client.user(&dovecot.user).await.expect("USER");
            match client.pass("wrong").await {
                Err(ClientError::Err(text)) => assert!(text.contains("[AUTH]"), "{text}"),
                other => panic!("a wrong password was not refused: {other:?}"),
            }
            assert!(started.elapsed() < Duration::from_millis(1500), "refused after {:?}", started.elapsed());
        }
        let started = Instant::now();
        client.auth_plain(&dovecot.user, &dovecot.password, true).await.expect("AUTH PLAIN with initial response");
        assert!(started.elapsed() < Duration::from_millis(1500), "good login took {:?}", started.elapsed());
        assert_eq!(client.stat().await.expect("STAT").0, 2);
        client.quit().await.expect("QUIT");

        let (mut client, _) = Pop3Client::connect(dovecot.addr).await.expect("connect");
        client.auth_plain(&dovecot.user, &dovecot.password, false).await.expect("AUTH PLAIN after continuation");
        assert_eq!(client.stat().await.expect("STAT").0, 2);
        client.quit().await.expect("QUIT");
    })
    .await;
}
