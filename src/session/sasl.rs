//! Who logs in with SASL (RFC 5034 `AUTH`): the user name is read from the
//! response that carries it, and nothing else of it is kept. The decoded
//! response of PLAIN holds the password too: it lives only inside
//! [`Login::response`].

use base64::Engine as _;

use crate::codec::command::UserName;

/// The mechanisms whose responses name the user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mechanism {
    /// `authzid NUL authcid NUL password` (RFC 4616): the authorization
    /// identity if given, else the authentication identity.
    Plain,
    /// The user name, then the password, each a response of its own.
    Login,
    /// `user SP digest` (RFC 2195).
    CramMd5,
    /// `user=NAME ^A auth=Bearer TOKEN ^A ^A`.
    XOauth2,
    /// Anything else: no user is learnt.
    Other,
}

/// A SASL exchange in progress.
#[derive(Debug, Clone)]
pub(super) struct Login {
    mechanism: Mechanism,
    /// Responses seen so far (the initial response counts).
    responses: u8,
}

impl Login {
    pub(super) fn new(mechanism: &str) -> Login {
        let mechanism = match mechanism {
            "PLAIN" => Mechanism::Plain,
            "LOGIN" => Mechanism::Login,
            "CRAM-MD5" => Mechanism::CramMd5,
            "XOAUTH2" => Mechanism::XOauth2,
            _ => Mechanism::Other,
        };
        Login { mechanism, responses: 0 }
    }

    /// A client response (base64, as on the wire): the user it names, if
    /// it is the one that names the user.
    pub(super) fn response(&mut self, base64: &[u8]) -> Option<UserName> {
        let index = self.responses;
        self.responses = self.responses.saturating_add(1);
        if index != 0 || self.mechanism == Mechanism::Other {
            return None;
        }
        // "=" is an empty response (RFC 5034 §4).
        let decoded = base64::engine::general_purpose::STANDARD.decode(base64).ok()?;
        let name: &[u8] = match self.mechanism {
            Mechanism::Plain => {
                let mut parts = decoded.splitn(3, |&b| b == 0);
                let (authz, authc) = (parts.next()?, parts.next()?);
                parts.next()?;
                if authz.is_empty() { authc } else { authz }
            }
            Mechanism::Login => &decoded,
            Mechanism::CramMd5 => &decoded[..decoded.iter().rposition(|&b| b == b' ')?],
            Mechanism::XOauth2 => decoded.split(|&b| b == 0x01).find_map(|f| f.strip_prefix(b"user="))?,
            Mechanism::Other => return None,
        };
        Some(UserName::parse(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(text: &[u8]) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD.encode(text).into_bytes()
    }

    #[test]
    fn each_mechanism_names_its_user_and_nothing_else() {
        let user = |mech: &str, responses: &[&[u8]]| {
            let mut login = Login::new(mech);
            let names: Vec<Option<UserName>> = responses.iter().map(|r| login.response(&b64(r))).collect();
            names.into_iter().flatten().map(|n| n.as_str().to_string()).collect::<Vec<_>>()
        };
        assert_eq!(user("PLAIN", &[b"\0alice\0s3cret"]), ["alice"]);
        assert_eq!(user("PLAIN", &[b"admin\0alice\0s3cret"]), ["admin"], "the authorization identity");
        assert_eq!(user("LOGIN", &[b"alice", b"s3cret"]), ["alice"], "the password line names nobody");
        assert_eq!(user("CRAM-MD5", &[b"alice 0123456789abcdef0123456789abcdef"]), ["alice"]);
        assert_eq!(user("XOAUTH2", &[b"user=alice@example.net\x01auth=Bearer tok\x01\x01"]), ["alice@example.net"]);
        assert!(user("GSSAPI", &[b"opaque"]).is_empty());
        // Not base64, or not the shape the mechanism sends: nobody.
        let mut login = Login::new("PLAIN");
        assert!(login.response(b"!!!").is_none());
        assert!(Login::new("PLAIN").response(&b64(b"no separators")).is_none());
        // A name that is not one token is shown as invalid, never as is.
        assert_eq!(user("LOGIN", &[b"al ice"]), ["(invalid)"]);
    }
}
