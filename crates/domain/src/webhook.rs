//! Webhook safety, for both directions: where an outbound webhook may be sent (never to
//! loopback, private, link-local, multicast, unique-local or other internal addresses,
//! however the address is spelled), and the HMAC-SHA256 signature over a timestamp and the
//! raw body, checked in constant time within a clock-skew window.

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use url::{Host, Url};

/// Why a webhook address is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TargetError {
    #[error("not a URL")]
    NotUrl,
    #[error("only http and https addresses are allowed")]
    Scheme,
    #[error("user names and passwords in the address are not allowed")]
    Credentials,
    #[error("the address has no host")]
    NoHost,
    /// Loopback, private, link-local, multicast, unique-local, reserved…
    #[error("{0} is an internal address")]
    Internal(String),
}

impl TargetError {
    /// The message in Russian.
    pub fn ru(&self) -> String {
        match self {
            TargetError::NotUrl => "это не адрес URL".into(),
            TargetError::Scheme => "разрешены только адреса http и https".into(),
            TargetError::Credentials => "имя и пароль в адресе не допускаются".into(),
            TargetError::NoHost => "в адресе нет хоста".into(),
            TargetError::Internal(h) => format!("{h} — внутренний адрес"),
        }
    }
}

/// Checks a webhook address as saved: http(s), no credentials, and a host that is not an
/// internal address in any spelling (`127.1`, `0177.0.0.1`, `2130706433`, `0x7f.0.0.1`,
/// `[::ffff:127.0.0.1]`… are all read as the address they mean). A host name is checked
/// again at send time against every address it resolves to (`check_resolved`).
/// `allow_loopback` is for tests that deliver to a local receiver.
pub fn check_target(raw: &str, allow_loopback: bool) -> Result<Url, TargetError> {
    let url = Url::parse(raw.trim()).map_err(|_| TargetError::NotUrl)?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(TargetError::Scheme);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(TargetError::Credentials);
    }
    match url.host() {
        None => return Err(TargetError::NoHost),
        Some(Host::Ipv4(ip)) => check_ip(IpAddr::V4(ip), allow_loopback)?,
        Some(Host::Ipv6(ip)) => check_ip(IpAddr::V6(ip), allow_loopback)?,
        Some(Host::Domain(d)) => {
            let d = d.trim_end_matches('.').to_ascii_lowercase();
            let local_name = d == "localhost" || d.ends_with(".localhost") || d.ends_with(".local") || d.ends_with(".internal");
            if local_name && !allow_loopback {
                return Err(TargetError::Internal(d));
            }
        }
    }
    Ok(url)
}

/// Checks the addresses a host name resolved to, just before connecting (so a name that
/// is re-pointed at an internal address — DNS rebinding — is refused).
pub fn check_resolved(addrs: &[IpAddr], allow_loopback: bool) -> Result<(), TargetError> {
    if addrs.is_empty() {
        return Err(TargetError::NoHost);
    }
    addrs.iter().try_for_each(|ip| check_ip(*ip, allow_loopback))
}

fn check_ip(ip: IpAddr, allow_loopback: bool) -> Result<(), TargetError> {
    if is_internal(ip) && !(allow_loopback && is_loopback(ip)) { Err(TargetError::Internal(ip.to_string())) } else { Ok(()) }
}

fn is_loopback(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_loopback(),
        IpAddr::V6(v6) => v6.is_loopback() || embedded_v4(v6).is_some_and(|v4| v4.is_loopback()),
    }
}

/// Whether an address is not a public unicast one.
pub fn is_internal(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => internal_v4(v4),
        IpAddr::V6(v6) => match embedded_v4(v6) {
            Some(v4) => internal_v4(v4),
            None => internal_v6(v6),
        },
    }
}

fn internal_v4(ip: Ipv4Addr) -> bool {
    let [a, b, c, _] = ip.octets();
    ip.is_unspecified()
        || a == 0 // "this network"
        || ip.is_loopback()
        || ip.is_private()
        || ip.is_link_local()
        || ip.is_multicast()
        || ip.is_broadcast()
        || a >= 240 // reserved
        || (a == 100 && (64..128).contains(&b)) // carrier-grade NAT
        || (a == 192 && b == 0 && c == 0) // IETF protocol assignments
        || (a == 192 && b == 0 && c == 2) // documentation
        || (a == 198 && b == 51 && c == 100)
        || (a == 203 && b == 0 && c == 113)
        || (a == 198 && (b == 18 || b == 19)) // benchmarking
}

fn internal_v6(ip: Ipv6Addr) -> bool {
    let s = ip.segments();
    ip.is_unspecified()
        || ip.is_loopback()
        || ip.is_multicast()
        || (s[0] & 0xfe00) == 0xfc00 // unique local fc00::/7
        || (s[0] & 0xffc0) == 0xfe80 // link-local fe80::/10
        || (s[0] & 0xffc0) == 0xfec0 // site-local (deprecated) fec0::/10
        || (s[0] == 0x2001 && s[1] == 0x0db8) // documentation
        || (s[0] == 0x2001 && s[1] == 0) // Teredo tunnels 2001::/32
        || (s[0] == 0x0100 && s[1..4] == [0; 3]) // discard-only 100::/64
        || (s[0] == 0x64 && s[1] == 0xff9b && s[2] == 1) // local-use NAT64 64:ff9b:1::/48
}

/// The IPv4 address inside an IPv6 one that carries it: mapped (`::ffff:a.b.c.d`),
/// compatible (`::a.b.c.d`), NAT64 (`64:ff9b::a.b.c.d`) and 6to4 (`2002:AABB:CCDD::`).
fn embedded_v4(ip: Ipv6Addr) -> Option<Ipv4Addr> {
    let s = ip.segments();
    let tail = Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    if s[..5] == [0; 5] && (s[5] == 0xffff || (s[5] == 0 && !ip.is_loopback() && !ip.is_unspecified())) {
        return Some(tail);
    }
    // IPv4-translated ::ffff:0:a.b.c.d
    if s[..4] == [0; 4] && s[4] == 0xffff && s[5] == 0 {
        return Some(tail);
    }
    if s[0] == 0x64 && s[1] == 0xff9b && s[2..6] == [0; 4] {
        return Some(tail);
    }
    if s[0] == 0x2002 {
        return Some(Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8));
    }
    None
}

type HmacSha256 = Hmac<Sha256>;

/// The signature of a delivery: hex HMAC-SHA256 of `"{timestamp}.{body}"`.
pub fn sign(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| HmacSha256::new_from_slice(b"").expect("HMAC takes any key"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Why a signed request is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the signature does not match")]
    Mismatch,
    #[error("the timestamp is outside the allowed clock skew")]
    Stale,
}

/// Checks a signature made by `sign`, in constant time, and that `timestamp` (seconds) is
/// within `skew_secs` of `now`.
pub fn verify(secret: &[u8], timestamp: i64, body: &[u8], signature_hex: &str, now: i64, skew_secs: i64) -> Result<(), SignatureError> {
    if now.abs_diff(timestamp) > skew_secs.unsigned_abs() {
        return Err(SignatureError::Stale);
    }
    let given = decode_hex(signature_hex.trim().trim_start_matches("sha256=")).ok_or(SignatureError::Mismatch)?;
    let mut mac = HmacSha256::new_from_slice(secret).map_err(|_| SignatureError::Mismatch)?;
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.verify_slice(&given).map_err(|_| SignatureError::Mismatch)
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.is_ascii() {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_an_internal_address_is_refused() {
        for raw in [
            "http://127.0.0.1/hook",
            "http://127.1/",
            "http://0177.0.0.1/",
            "http://0x7f.0.0.1/",
            "http://0x7f000001/",
            "http://2130706433/",
            "http://017700000001/",
            "http://localhost:8080/",
            "http://LOCALHOST./",
            "http://api.localhost/",
            "http://0.0.0.0/",
            "http://0/",
            "http://10.1.2.3/",
            "http://012.1.2.3/",
            "http://172.16.0.1/",
            "http://172.31.255.255/",
            "http://192.168.1.1/",
            "http://3232235777/",
            "http://169.254.169.254/latest/meta-data/",
            "http://100.64.0.1/",
            "http://224.0.0.1/",
            "http://239.255.255.250/",
            "http://255.255.255.255/",
            "http://[::1]/",
            "http://[::]/",
            "http://[0:0:0:0:0:0:0:1]/",
            "http://[::ffff:127.0.0.1]/",
            "http://[::ffff:7f00:1]/",
            "http://[::ffff:10.0.0.1]/",
            "http://[::127.0.0.1]/",
            "http://[64:ff9b::7f00:1]/",
            "http://[2002:7f00:1::]/",
            "http://[fc00::1]/",
            "http://[fd12:3456::1]/",
            "http://[fe80::1]/",
            "http://[ff02::1]/",
            "http://[::ffff:0:7f00:1]/",
            "http://[64:ff9b:1::a00:1]/",
            "http://[2001::1]/",
            "http://[100::1]/",
            "https://[fec0::1]/",
        ] {
            assert!(
                matches!(check_target(raw, false), Err(TargetError::Internal(_))),
                "{raw} must be refused: {:?}",
                check_target(raw, false)
            );
        }
    }

    #[test]
    fn public_addresses_and_names_pass() {
        for raw in [
            "https://example.com/hook",
            "http://93.184.216.34/x",
            "https://[2606:2800:220:1:248:1893:25c8:1946]/",
            "https://crm.example.ru:8443/in?x=1",
        ] {
            assert!(check_target(raw, false).is_ok(), "{raw}");
        }
    }

    #[test]
    fn other_schemes_and_credentials_are_refused() {
        assert_eq!(check_target("ftp://example.com/", false), Err(TargetError::Scheme));
        assert_eq!(check_target("file:///etc/passwd", false), Err(TargetError::Scheme));
        assert_eq!(check_target("gopher://127.0.0.1:25/", false), Err(TargetError::Scheme));
        assert_eq!(check_target("http://user:pw@example.com/", false), Err(TargetError::Credentials));
        assert_eq!(check_target("not a url", false), Err(TargetError::NotUrl));
    }

    #[test]
    fn loopback_only_when_allowed_and_never_private() {
        assert!(check_target("http://127.0.0.1:9000/", true).is_ok());
        assert!(check_target("http://[::ffff:127.0.0.1]/", true).is_ok());
        assert!(check_target("http://10.0.0.1/", true).is_err());
        assert!(check_target("http://169.254.169.254/", true).is_err());
    }

    #[test]
    fn resolved_addresses_are_checked_at_send_time() {
        let public: IpAddr = "93.184.216.34".parse().unwrap();
        let rebound: IpAddr = "127.0.0.1".parse().unwrap();
        assert!(check_resolved(&[public], false).is_ok());
        assert!(check_resolved(&[public, rebound], false).is_err(), "any internal address refuses the name");
        assert!(check_resolved(&[], false).is_err());
    }

    #[test]
    fn signatures_verify_in_the_window_and_not_otherwise() {
        let body = br#"{"event":"lead.created"}"#;
        let sig = sign(b"secret", 1_700_000_000, body);
        assert_eq!(sig.len(), 64);
        assert_eq!(verify(b"secret", 1_700_000_000, body, &sig, 1_700_000_100, 300), Ok(()));
        assert_eq!(verify(b"secret", 1_700_000_000, body, &format!("sha256={sig}"), 1_700_000_000, 300), Ok(()));
        assert_eq!(verify(b"secret", 1_700_000_000, body, &sig, 1_700_000_301, 300), Err(SignatureError::Stale));
        assert_eq!(verify(b"other", 1_700_000_000, body, &sig, 1_700_000_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(
            verify(b"secret", 1_700_000_001, body, &sig, 1_700_000_001, 300),
            Err(SignatureError::Mismatch),
            "the timestamp is signed"
        );
        assert_eq!(verify(b"secret", 1_700_000_000, b"{}", &sig, 1_700_000_000, 300), Err(SignatureError::Mismatch));
        assert_eq!(verify(b"secret", 1_700_000_000, body, "zz", 1_700_000_000, 300), Err(SignatureError::Mismatch));
        // Extreme timestamps are stale, not an overflow.
        assert_eq!(verify(b"secret", i64::MIN, body, &sig, 1_700_000_000, 300), Err(SignatureError::Stale));
        assert_eq!(verify(b"secret", i64::MAX, body, &sig, i64::MIN, 300), Err(SignatureError::Stale));
    }
}
