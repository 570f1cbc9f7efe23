//! Webhooks' rules: the message types, what an endpoint may be registered
//! with, where a message may be sent, when a failed one is tried again, and
//! the body a receiver gets (the webhooks contract).

use std::net::IpAddr;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use url::Url;

use super::{Error, EventType, FlowState, Result, Scope};

/// The message types, one per event type, then the erasures and the test.
pub const MESSAGE_TYPES: [&str; 13] = [
    "flow.started",
    "flow.step.completed",
    "flow.step.skipped",
    "flow.step.set",
    "flow.completed",
    "flow.dismissed",
    "flow.snoozed",
    "flow.restarted",
    "flow.reset",
    "flow.reonboarded",
    USER_ERASED,
    GROUP_ERASED,
    TEST,
];
pub const USER_ERASED: &str = "user.erased";
pub const GROUP_ERASED: &str = "group.erased";
pub const TEST: &str = "webhook.test";

/// Most endpoints one service sends to.
pub const MAX_ENDPOINTS: i64 = 50;
/// Longest URL an endpoint may have, in bytes.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest description, in characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1000;
/// Largest body a message may have.
pub const MAX_BODY_BYTES: usize = 20 * 1024;
/// How long the receiver has to answer one attempt.
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(15);
/// Most of a response read; the rest is not.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// How long an endpoint may fail every attempt before it is disabled.
pub const FAILING_FOR: Duration = Duration::from_secs(5 * 24 * 60 * 60);
/// How long a rotated-out secret still signs beside the new one.
pub const ROTATION_OVERLAP: Duration = Duration::from_secs(24 * 60 * 60);
/// Attempts a message keeps in its history; older ones are dropped.
pub const MAX_ATTEMPTS_KEPT: usize = 20;

/// The waits after the first, second, ... failed attempt; after the last
/// one fails too, the message is FAILED.
const BACKOFF: [Duration; 7] = [
    Duration::from_secs(5),
    Duration::from_secs(5 * 60),
    Duration::from_secs(30 * 60),
    Duration::from_secs(2 * 60 * 60),
    Duration::from_secs(5 * 60 * 60),
    Duration::from_secs(10 * 60 * 60),
    Duration::from_secs(10 * 60 * 60),
];
/// The longest `Retry-After` honoured: the longest wait of the schedule.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(10 * 60 * 60);

/// A fresh id: `prefix`, `_`, then 128 random bits in hex.
pub fn new_id(prefix: &str) -> String {
    let mut bytes = [0u8; 16];
    fill_random(&mut bytes);
    let mut id = String::with_capacity(prefix.len() + 33);
    id.push_str(prefix);
    id.push('_');
    for byte in bytes {
        id.push_str(&format!("{byte:02x}"));
    }
    id
}

/// `bytes` from the operating system's random source.
pub fn fill_random(bytes: &mut [u8]) {
    // The OS's source does not fail on a system that booted; should it,
    // ids and secrets must not be predictable, so the process stops.
    #[allow(clippy::expect_used)]
    getrandom::getrandom(bytes).expect("the operating system's random source");
}

/// The message type of an event of `kind`.
pub fn message_type(kind: EventType) -> &'static str {
    match kind {
        EventType::FlowStarted => "flow.started",
        EventType::StepCompleted => "flow.step.completed",
        EventType::StepSkipped => "flow.step.skipped",
        EventType::StepSet => "flow.step.set",
        EventType::FlowCompleted => "flow.completed",
        EventType::FlowDismissed => "flow.dismissed",
        EventType::FlowSnoozed => "flow.snoozed",
        EventType::FlowRestarted => "flow.restarted",
        EventType::Reset => "flow.reset",
        EventType::Reonboarded => "flow.reonboarded",
    }
}

/// What an endpoint delivers: `types` and `flows` both apply, and an empty
/// list means every one; erasures ignore `flows`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub types: Vec<String>,
    pub flows: Vec<String>,
}

impl Filter {
    /// Checks every type against the contract's; flows are checked against
    /// the published ones by the caller.
    pub fn check(types: Vec<String>, flows: Vec<String>) -> Result<Self> {
        if let Some(unknown) = types.iter().find(|t| !MESSAGE_TYPES.contains(&t.as_str())) {
            return Err(Error::BadUserInput(format!(
                "`eventTypes` holds {unknown:?}, which is not a message type; use any of {}, \
                 or leave it empty for every type.",
                MESSAGE_TYPES.join(", ")
            )));
        }
        let dedup = |mut list: Vec<String>| {
            let mut seen = std::collections::HashSet::new();
            list.retain(|item| seen.insert(item.clone()));
            list
        };
        Ok(Self {
            types: dedup(types),
            flows: dedup(flows),
        })
    }

    /// Whether a message of `message_type` about `flow` (none for an
    /// erasure) is delivered.
    pub fn admits(&self, message_type: &str, flow: Option<&str>) -> bool {
        let type_admitted = self.types.is_empty() || self.types.iter().any(|t| t == message_type);
        let flow_admitted = match flow {
            None => true,
            Some(flow) => self.flows.is_empty() || self.flows.iter().any(|f| f == flow),
        };
        type_admitted && flow_admitted
    }
}

/// An endpoint's URL, checked: `https://` (or `http://` where private
/// receivers are allowed), no credentials, at most 2 KiB, and not a
/// loopback, private, link-local or multicast address, nor a name that
/// always means one.
pub fn check_url(text: &str, allow_private: bool) -> Result<Url> {
    let bad = |why: String| Err(Error::BadUserInput(format!("`url` {why}")));
    if text.len() > MAX_URL_BYTES {
        return bad(format!(
            "is {} bytes long; the most is {MAX_URL_BYTES}.",
            text.len()
        ));
    }
    let url = match Url::parse(text) {
        Ok(url) => url,
        Err(error) => {
            return bad(format!(
                "is not a URL ({error}): give e.g. https://example.com/hooks."
            ));
        }
    };
    match url.scheme() {
        "https" => {}
        "http" if allow_private => {}
        "http" => {
            return bad(
                "must be https:// (http:// is allowed only with WEBHOOK_ALLOW_PRIVATE=true, \
                 for an internal receiver)."
                    .to_owned(),
            );
        }
        other => return bad(format!("must be https://, not {other}://.")),
    }
    if !url.username().is_empty() || url.password().is_some() {
        return bad(
            "must not hold credentials (user:password@); receivers verify the signature instead."
                .to_owned(),
        );
    }
    // As it will be stored and sent: percent-encoding may have grown it.
    if url.as_str().len() > MAX_URL_BYTES {
        return bad(format!(
            "is {} bytes long once encoded; the most is {MAX_URL_BYTES}.",
            url.as_str().len()
        ));
    }
    let Some(host) = url.host() else {
        return bad("has no host.".to_owned());
    };
    if !allow_private {
        let refused = match host {
            url::Host::Ipv4(ip) => !is_public(IpAddr::V4(ip)),
            url::Host::Ipv6(ip) => !is_public(IpAddr::V6(ip)),
            url::Host::Domain(name) => is_local_name(name),
        };
        if refused {
            return bad(private_refusal(&host.to_string()));
        }
    }
    Ok(url)
}

/// Why a private receiver is refused, and the setting that allows it.
pub fn private_refusal(what: &str) -> String {
    format!(
        "points at {what}, a loopback, private, link-local or multicast address; receivers must \
         be public (WEBHOOK_ALLOW_PRIVATE=true allows private ones, for an internal receiver)."
    )
}

/// Names that always resolve to this machine.
fn is_local_name(name: &str) -> bool {
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost" || name.ends_with(".localhost")
}

/// Whether a message may go to `ip`: not loopback, private, shared
/// (carrier-grade NAT), link-local, multicast, broadcast, unspecified or
/// reserved, in IPv4 or in IPv6 (an IPv4 address mapped into IPv6 counts as
/// the IPv4 one).
pub fn is_public(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(ip) => {
            let [a, b, ..] = ip.octets();
            !(ip.is_loopback()
                || ip.is_private()
                || ip.is_link_local()
                || ip.is_multicast()
                || ip.is_broadcast()
                || ip.is_unspecified()
                || ip.is_documentation()
                || a == 0
                || (a == 100 && (64..128).contains(&b))
                || (a == 192 && b == 0 && ip.octets()[2] == 0)
                || (a == 198 && (b == 18 || b == 19))
                || a >= 240)
        }
        IpAddr::V6(ip) => {
            if let Some(v4) = ip.to_ipv4_mapped() {
                return is_public(IpAddr::V4(v4));
            }
            let segments = ip.segments();
            let [first, second, ..] = segments;
            // 6to4 carries an IPv4 address in its second and third segments.
            if first == 0x2002 {
                let [a, b] = second.to_be_bytes();
                let [c, d] = segments[2].to_be_bytes();
                return is_public(IpAddr::V4(std::net::Ipv4Addr::new(a, b, c, d)));
            }
            !(ip.is_loopback()
                || ip.is_unspecified()
                || ip.is_multicast()
                || (first & 0xfe00) == 0xfc00
                || (first & 0xffc0) == 0xfe80
                || (first & 0xffc0) == 0xfec0
                // Documentation, Teredo and ORCHID-style tunnels (2001::/23).
                || (first == 0x2001 && (second == 0x0db8 || second < 0x0200))
                // NAT64 (64:ff9b::/96 and the local 64:ff9b:1::/48), which
                // reach IPv4 addresses behind the translator.
                || (first == 0x0064 && second == 0xff9b)
                // IPv4-compatible and SIIT (::ffff:0:a.b.c.d) forms.
                || segments[..4] == [0; 4])
        }
    }
}

/// The wait before the next attempt after `tries` attempts failed, with
/// `jitter` (0 to 1) spreading it by ±10%; none after the last one.
pub fn backoff(tries: i32, jitter: f64) -> Option<Duration> {
    let index = usize::try_from(tries).ok()?.checked_sub(1)?;
    let base = *BACKOFF.get(index)?;
    Some(base.mul_f64(0.9 + 0.2 * jitter.clamp(0.0, 1.0)))
}

/// The wait a `Retry-After` header asks for: seconds, or an HTTP date;
/// at most the schedule's longest wait.
pub fn retry_after(header: &str, now: DateTime<Utc>) -> Option<Duration> {
    let header = header.trim();
    let wait = match header.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(header)
                .ok()?
                .with_timezone(&Utc);
            (at - now).to_std().unwrap_or_default()
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// A state as an event left it, as the event records it.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub revision: i64,
    pub status: String,
    pub current_step: i32,
    pub completed_at: Option<DateTime<Utc>>,
    /// The keys of the steps done.
    pub done: Vec<String>,
}

impl Snapshot {
    /// Reads the `state` an event records (`revision` is a column of its own).
    pub fn parse(revision: i64, state: &str) -> Option<Self> {
        let state: Value = serde_json::from_str(state).ok()?;
        let completed_at = match state.get("completedAt") {
            Some(Value::String(at)) => Some(parse_time(at)?),
            _ => None,
        };
        Some(Self {
            revision,
            status: state.get("status")?.as_str()?.to_owned(),
            current_step: i32::try_from(state.get("currentStep")?.as_i64()?).ok()?,
            completed_at,
            done: state
                .get("done")
                .and_then(Value::as_array)
                .map(|done| {
                    done.iter()
                        .filter_map(|key| key.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
        })
    }
}

/// The `state` an event of a change to `state` records.
pub fn snapshot_of(state: &FlowState) -> String {
    json!({
        "status": state.status.as_str(),
        "currentStep": state.current_step,
        "completedAt": state.completed_at.map(rfc3339),
        "done": state.steps.keys().collect::<Vec<_>>(),
    })
    .to_string()
}

/// A time as either backend writes it into JSON.
fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(text)
        .or_else(|_| DateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f%#z"))
        .ok()
        .map(|at| at.with_timezone(&Utc))
}

/// One event of the history, as a message tells of it.
#[derive(Debug, Clone)]
pub struct OutboxEvent {
    pub id: i64,
    /// The user's id, or for a GROUP flow the group's.
    pub owner: String,
    pub scope: Scope,
    pub flow: String,
    pub version: i32,
    pub kind: EventType,
    pub step: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub snapshot: Snapshot,
}

impl OutboxEvent {
    /// `data.userId`: for a group's event, the member (or admin) who made it.
    pub fn user_id(&self) -> &str {
        match self.scope {
            Scope::User => &self.owner,
            Scope::Group => &self.actor,
        }
    }

    pub fn group_id(&self) -> Option<&str> {
        match self.scope {
            Scope::User => None,
            Scope::Group => Some(&self.owner),
        }
    }

    /// The body of its message; `steps` are the keys of its version's steps.
    pub fn body(&self, steps: &[&str]) -> String {
        let done = steps
            .iter()
            .filter(|key| self.snapshot.done.iter().any(|done| done == *key))
            .count();
        let state = &self.snapshot;
        body(
            message_type(self.kind),
            self.at,
            json!({
                "eventId": self.id.to_string(),
                "userId": self.user_id(),
                "groupId": self.group_id(),
                "flow": self.flow,
                "version": self.version,
                "step": self.step,
                "actor": self.actor,
                "revision": state.revision,
                "at": rfc3339(self.at),
                "state": {
                    "status": state.status,
                    // As the API's FlowState has it: the step's key, null
                    // past the last step or on a flow without steps.
                    "currentStep": usize::try_from(state.current_step)
                        .ok()
                        .and_then(|index| steps.get(index)),
                    "doneSteps": done,
                    "totalSteps": steps.len(),
                    "completedAt": state.completed_at.map(rfc3339),
                },
            }),
        )
    }
}

/// A body: `{"type", "timestamp", "data"}`.
pub fn body(message_type: &str, at: DateTime<Utc>, data: Value) -> String {
    json!({ "type": message_type, "timestamp": rfc3339(at), "data": data }).to_string()
}

/// A time as the API writes it: RFC 3339 in UTC, to the microsecond.
pub fn rfc3339(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_https_without_credentials_nor_private_hosts() {
        assert!(check_url("https://example.com/hooks", false).is_ok());
        for refused in [
            "http://example.com/hooks",
            "ftp://example.com/",
            "https://user:pw@example.com/",
            "https://127.0.0.1/",
            "https://10.1.2.3/",
            "https://169.254.169.254/latest",
            "https://[::1]/",
            "https://[::ffff:192.168.0.1]/",
            "https://localhost:8443/",
            "https://api.localhost/",
            "https://0.0.0.0/",
            "https://2130706433/",
            "https://0177.0.0.1/",
            "https://0x7f.1/",
            "https://[2002:7f00:1::]/",
            "not a url",
        ] {
            let error = check_url(refused, false).expect_err(refused);
            assert_eq!(error.code(), "BAD_USER_INPUT", "{refused}");
        }
        assert!(check_url("http://127.0.0.1:9000/", true).is_ok());
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_BYTES));
        assert!(check_url(&long, true).is_err());
        let grows = format!("https://example.com/{}", "é".repeat(700));
        assert!(grows.len() < MAX_URL_BYTES && check_url(&grows, true).is_err());
    }

    #[test]
    fn public_addresses_are_the_routable_ones() {
        for public in [
            "93.184.216.34",
            "2606:2800:220:1::1",
            "100.128.0.1",
            "2002:5db8:d822::1",
            "2a00:1450:4001::1",
        ] {
            assert!(is_public(public.parse().unwrap()), "{public}");
        }
        for private in [
            "127.0.0.1",
            "10.0.0.1",
            "172.16.0.1",
            "192.168.1.1",
            "169.254.0.1",
            "224.0.0.1",
            "100.64.0.1",
            "255.255.255.255",
            "0.0.0.0",
            "::1",
            "fe80::1",
            "fd00::1",
            "ff02::1",
            "::ffff:10.0.0.1",
            "::",
        ] {
            assert!(!is_public(private.parse().unwrap()), "{private}");
        }
    }

    #[test]
    fn backoff_follows_the_schedule_then_gives_up() {
        assert_eq!(backoff(1, 0.5), Some(Duration::from_secs(5)));
        assert_eq!(backoff(2, 0.5), Some(Duration::from_secs(300)));
        assert_eq!(backoff(7, 0.5), Some(Duration::from_secs(36_000)));
        assert_eq!(backoff(8, 0.5), None);
        assert_eq!(backoff(0, 0.5), None);
        let spread = backoff(1, 1.0).unwrap();
        assert!(spread > Duration::from_secs(5) && spread <= Duration::from_millis(5_500));
    }

    #[test]
    fn retry_after_takes_seconds_or_a_date() {
        let now = DateTime::parse_from_rfc3339("2026-12-03T10:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(retry_after("2", now), Some(Duration::from_secs(2)));
        assert_eq!(
            retry_after("Thu, 03 Dec 2026 10:01:00 GMT", now),
            Some(Duration::from_secs(60))
        );
        assert_eq!(retry_after("999999999", now), Some(MAX_RETRY_AFTER));
        assert_eq!(retry_after("soon", now), None);
    }

    #[test]
    fn filters_intersect_and_erasures_ignore_flows() {
        let filter = Filter::check(vec!["flow.completed".into()], vec!["tour".into()]).unwrap();
        assert!(filter.admits("flow.completed", Some("tour")));
        assert!(!filter.admits("flow.completed", Some("other")));
        assert!(!filter.admits("flow.started", Some("tour")));
        let erasures = Filter::check(vec![USER_ERASED.into()], vec!["tour".into()]).unwrap();
        assert!(erasures.admits(USER_ERASED, None));
        assert!(Filter::check(vec!["flow.finished".into()], vec![]).is_err());
    }

    #[test]
    fn snapshots_read_either_backends_times() {
        let postgres = r#"{"status":"COMPLETED","currentStep":2,"completedAt":"2026-12-03T10:00:00.5+00:00","done":["a"]}"#;
        let sqlite = r#"{"status":"COMPLETED","currentStep":2,"completedAt":"2026-12-03 10:00:00.5+00:00","done":["a"]}"#;
        let a = Snapshot::parse(3, postgres).unwrap();
        assert_eq!(a, Snapshot::parse(3, sqlite).unwrap());
        assert_eq!(a.done, vec!["a".to_owned()]);
    }
}
