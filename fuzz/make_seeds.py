#!/usr/bin/env python3
"""Writes the hand-written seed corpus (fuzz/corpus-seed/) from POP3
transcripts, in the two input formats of fuzz/harness.rs:

- fuzz_client: byte 0 = n, then (n % 8) + 1 read sizes (0: all that is left),
  then the client's stream;
- fuzz_server: records `ctl, data`, ctl bit 7 = from the client, low 7 bits =
  the read's length.

Run from anywhere: python3 fuzz/make_seeds.py
"""
import os

HERE = os.path.dirname(os.path.abspath(__file__))
C, S = True, False

GREETING = b"+OK POP3 server ready <1896.697170952@dbc.mtview.ca.us>\r\n"

TRANSCRIPTS = {
    "rfc1939": [
        (S, GREETING),
        (C, b"USER mrose\r\n"),
        (S, b"+OK mrose is a real hoopy frood\r\n"),
        (C, b"PASS tanstaaf\r\n"),
        (S, b"+OK mrose's maildrop has 2 messages (320 octets)\r\n"),
        (C, b"STAT\r\n"),
        (S, b"+OK 2 320\r\n"),
        (C, b"LIST\r\n"),
        (S, b"+OK 2 messages (320 octets)\r\n1 120\r\n2 200\r\n.\r\n"),
        (C, b"RETR 1\r\n"),
        (S, b"+OK 120 octets\r\nMessage-ID: <1@x>\r\nSubject: hi\r\n\r\n..leading dot\r\n.\r\n.\r\n..\r\nend\r\n.\r\n"),
        (C, b"DELE 1\r\n"),
        (S, b"+OK message 1 deleted\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"+OK dewey POP3 server signing off (1 message left)\r\n"),
    ],
    "apop-commit-failed": [
        (S, GREETING),
        (C, b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\n"),
        (S, b"+OK maildrop has 1 message (369 octets)\r\n"),
        (C, b"UIDL\r\n"),
        (S, b"+OK\r\n1 whqtswO00WBw418f9t5JxYwZ\r\n.\r\n"),
        (C, b"UIDL 1\r\n"),
        (S, b"+OK 1 whqtswO00WBw418f9t5JxYwZ\r\n"),
        (C, b"TOP 1 0\r\n"),
        (S, b"+OK\r\nSubject: top\r\n\r\n.\r\n"),
        (C, b"DELE 1\r\n"),
        (S, b"+OK\r\n"),
        (C, b"RSET\r\n"),
        (S, b"+OK\r\n"),
        (C, b"DELE 1\r\n"),
        (S, b"+OK\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"-ERR [SYS/TEMP] some deleted messages not removed\r\n"),
    ],
    "pipelined": [
        (S, b"+OK hi\r\n"),
        (C, b"CAPA\r\n"),
        (S, b"+OK\r\nPIPELINING\r\nUIDL\r\nTOP\r\nSASL PLAIN LOGIN\r\nSTLS\r\n.\r\n"),
        (C, b"USER u\r\nPASS p\r\nSTAT\r\nUIDL\r\nRETR 1\r\nRETR 2\r\nDELE 1\r\nDELE 2\r\nLIST 9\r\nXTND XMIT\r\nQUIT\r\n"),
        (S, b"+OK\r\n+OK\r\n+OK 2 30\r\n+OK\r\n1 a\r\n2 b\r\n.\r\n"),
        (S, b"+OK\r\nMessage-ID: <a@b>\r\n\r\nx\r\n.\r\n+OK\r\nno id\r\n\r\n..y\r\n.\r\n"),
        (S, b"+OK\r\n+OK\r\n-ERR [IN-USE] no such message\r\n+OK\r\n+OK bye\r\n"),
    ],
    "sasl": [
        (S, b"+OK hi\r\n"),
        (C, b"AUTH\r\n"),
        (S, b"+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n"),
        (C, b"AUTH LOGIN\r\n"),
        (S, b"+ VXNlcm5hbWU6\r\n"),
        (C, b"*\r\n"),
        (S, b"-ERR cancelled\r\n"),
        (C, b"AUTH PLAIN\r\n"),
        (S, b"+ \r\n"),
        (C, b"AGFsaWNlAHNlY3JldA==\r\n"),
        (S, b"-ERR [AUTH] bad\r\n"),
        (C, b"AUTH PLAIN AGFsaWNlAHNlY3JldA==\r\n"),
        (S, b"+OK logged in\r\n"),
        (C, b"RETR 1\r\n"),
        (S, b"+OK\r\nbody\r\n.\r\n"),
    ],
    "sasl-login": [
        (S, b"+OK hi\r\n"),
        (C, b"AUTH LOGIN\r\n"),
        (S, b"+ VXNlcm5hbWU6\r\n"),
        (C, b"YWxpY2U=\r\n"),
        (S, b"+ UGFzc3dvcmQ6\r\n"),
        (C, b"c2VjcmV0\r\n"),
        (S, b"+OK\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"+OK\r\n"),
    ],
    "stls": [
        (S, b"+OK hi\r\n"),
        (C, b"STLS\r\n"),
        (S, b"+OK begin TLS\r\n\x16\x03\x01\x00\x05hello"),
        (C, b"\x16\x03\x01\x02\x00\r\n.\r\nRETR 1\r\n\x00\xff"),
        (S, b"\x17\x03\x03\x00\x10+OK\r\n.\r\n"),
    ],
    "stls-refused": [
        (S, b"+OK hi\r\n"),
        (C, b"STLS\r\n"),
        (S, b"-ERR not now\r\n"),
        (C, b"USER a\r\n"),
        (S, b"+OK\r\n"),
    ],
    "overlong": [
        (S, b"+OK hi\r\n"),
        (C, b"NOOP " + b"x" * 400 + b"\r\n"),
        (S, b"+OK " + b"y" * 700 + b"\r\n"),
        (C, b"USER " + b"u" * 300 + b"\r\nPASS p\r\n"),
        (S, b"+OK\r\n+OK\r\n"),
        (C, b"RETR 1\r\n"),
        (S, b"+OK " + b"z" * 600 + b"\r\nbody\r\n.\r\n"),
        (C, b"STAT\r\n"),
        (S, b"+OK 1 2\r\n"),
    ],
    "overlong-split-args": [
        (S, b"+OK hi\r\n"),
        (C, b"USER a\r\nPASS b\r\n"),
        (S, b"+OK\r\n+OK\r\n"),
        (C, b"TOP 1" + b" " * 260 + b"5\r\n"),
        (S, b"+OK\r\nSubject: s\r\n\r\n.\r\n"),
    ],
    "stuffed-bodies": [
        (S, b"+OK hi\r\n"),
        (C, b"USER a\r\nPASS b\r\nRETR 1\r\n"),
        (S, b"+OK\r\n+OK\r\n+OK\r\n..\r\n...\r\n.x\r\n. \r\n.\r\r\n..\r\n.\r\n"),
        (C, b"RETR 2\r\n"),
        (S, b"+OK\r\nMESSAGE-ID:   <sp@x>  \r\n\r\n\r\n.\r\n"),
        (C, b"RETR 3\r\n"),
        (S, b"+OK\r\nX-Long: " + b"h" * 1000 + b"\r\nMessage-ID: <after-long@x>\r\n\r\nb\r\n.\r\n"),
    ],
    "bare-lf": [
        (S, b"+OK hi\n"),
        (C, b"USER a\nPASS b\nLIST\nRETR 1\nUIDL\n"),
        (S, b"+OK\n+OK\n+OK\n1 10\n.\n+OK\nSubject: x\n\nbody\n.\n+OK\n1 uid-1\n.\n"),
        (C, b"QUIT\r"),
        (C, b"\n"),
        (S, b"+OK\n"),
    ],
    "uidl-long-line": [
        (S, b"+OK hi\r\n"),
        (C, b"USER a\r\nPASS b\r\nUIDL\r\n"),
        (S, b"+OK\r\n+OK\r\n+OK\r\n1 shortuid" + b" " * 150 + b"\r\n2 " + b"u" * 80 + b"\r\n.\r\n"),
        (C, b"RETR 1\r\n"),
        (S, b"+OK\r\nb\r\n.\r\n"),
    ],
    "unsolicited": [
        (S, b"+OK hi\r\n-ERR autologout\r\n+ stray\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"+OK\r\n-ERR late\r\n"),
    ],
    "greeting-err": [
        (S, b"-ERR [SYS/TEMP] go away\r\n"),
        (C, b"QUIT\r\n"),
    ],
    "sasl-long-response": [
        (S, b"+OK hi\r\n"),
        (C, b"AUTH GSSAPI\r\n"),
        (S, b"+ \r\n"),
        (C, b"YII" + b"A" * 400 + b"==\r\n"),
        (S, b"+ YGkGCSqGSIb3EgECAgIAb1owWKADAgEFoQMCAQ+iTDBKoAMCARKiQwRB\r\n"),
        (C, b"\r\n"),
        (S, b"+OK\r\n"),
        (C, b"RETR 1\r\n"),
        (S, b"+OK\r\nSubject: x\r\n\r\nbody\r\n.\r\n"),
        (C, b"QUIT\r\n"),
        (S, b"+OK\r\n"),
    ],
    "in-doubt": [
        (S, b"+OK hi\r\n"),
        (C, b"USER a\r\nPASS b\r\nRETR 1\r\nDELE 1\r\nQUIT\r\n"),
        (S, b"+OK\r\n+OK\r\n+OK\r\nMessage-ID: <1@t>\r\n\r\nx\r\n.\r\n+OK\r\n"),
    ],
}


def session_input(transcript, size):
    """Records of at most `size` (<= 127) bytes each."""
    out = bytearray()
    for from_client, data in transcript:
        for i in range(0, max(len(data), 1), size):
            piece = data[i:i + size]
            out.append((0x80 if from_client else 0) | len(piece))
            out += piece
    return bytes(out)


def client_input(transcript, sizes):
    stream = b"".join(d for c, d in transcript if c)
    return bytes([len(sizes) - 1] + sizes) + stream


def write(target, name, data):
    d = os.path.join(HERE, "corpus-seed", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


for name, t in TRANSCRIPTS.items():
    write("fuzz_server", name, session_input(t, 127))
    write("fuzz_server", name + "-split7", session_input(t, 7))
    write("fuzz_client", name, client_input(t, [0]))
    write("fuzz_client", name + "-split", client_input(t, [1, 13, 200, 3]))


# Minimal reproducers of the bugs in harness.rs's `Known` (fuzz/regressions/):
# they pass as the fuzzers run them (bugs tolerated) and fail the strict
# replay (tests/it/fuzz_regressions.rs, ignored test) until src/ is fixed.
def write_regression(target, name, data):
    d = os.path.join(HERE, "regressions", target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# One 255-byte read: "TOP 1" + spaces (no LF yet), then "5\r\n".
write_regression("fuzz_client", "overlong-command-parse", bytes([0, 255]) + b"TOP 1" + b" " * 250 + b"5\r\n")
write_regression("fuzz_client", "violations-counted-twice", bytes([0, 0]) + b"NOOP " + b"x" * 300 + b"\r\n")
write_regression("fuzz_server", "header-line-overflow", session_input([
    (S, b"+OK\r\n"),
    (C, b"RETR 1\r\n"),
    (S, b"+OK\r\nX: " + b"a" * 1000 + b"\r\nMessage-ID: <m@x>\r\n\r\n.\r\n"),
], 127))
write_regression("fuzz_server", "uidl-line-overflow", session_input([
    (S, b"+OK\r\n"),
    (C, b"UIDL\r\n"),
    (S, b"+OK\r\n1 u" + b" " * 130 + b"\r\n.\r\n"),
], 127))
write_regression("fuzz_server", "overlong-status-untracked", session_input([
    (S, b"+OK\r\n"),
    (C, b"QUIT\r\n"),
    (S, b"+OK " + b"x" * 600 + b"\r\n"),
], 127))
