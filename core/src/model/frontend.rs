//! What an app's balancer is set up with: its port, its picker, and what it speaks.

use serde::{Deserialize, Serialize};

use super::{SpecError, invalid};
use crate::limits;

/// How a balancer chooses a backend for each request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PickerKind {
    /// Each healthy backend in turn.
    #[default]
    RoundRobin,
    /// The backend with the fewest requests in flight; ties go round-robin.
    LeastInFlight,
    /// Two backends drawn at random; the one with fewer requests in flight.
    PowerOfTwoChoices,
    /// Round-robin in proportion to each backend's weight (smooth, as nginx does it).
    Weighted,
}

impl PickerKind {
    /// Every picker, by the name used in files and on the command line.
    pub const ALL: [(&'static str, PickerKind); 4] = [
        ("round-robin", PickerKind::RoundRobin),
        ("least-in-flight", PickerKind::LeastInFlight),
        ("power-of-two-choices", PickerKind::PowerOfTwoChoices),
        ("weighted", PickerKind::Weighted),
    ];
}

/// What an app's balancer speaks on its published port.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 and HTTP/2 (prior knowledge) from clients; each request goes to a replica.
    #[default]
    Http,
    /// Each TCP connection goes to a replica and its bytes pass through untouched (a database,
    /// a message broker, any protocol the balancer does not speak).
    Tcp,
}

impl Protocol {
    /// Every protocol, by the name used in files.
    pub const ALL: [(&'static str, Protocol); 2] = [("http", Protocol::Http), ("tcp", Protocol::Tcp)];

    /// The name used in files.
    pub fn name(self) -> &'static str {
        Protocol::ALL.iter().find(|(_, p)| *p == self).map(|(n, _)| *n).unwrap_or("?")
    }
}

/// An app's balancer: where it listens and how it forwards. Derived from the spec
/// ([`super::AppSpec::frontend`]) whenever it is needed, never stored apart from it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Frontend {
    /// The published port.
    pub port: u16,
    /// How a replica is chosen for each request (HTTP) or connection (TCP).
    pub picker: PickerKind,
    /// HTTP or TCP.
    pub protocol: Protocol,
    /// The largest request body passed on; `None`: no cap. HTTP only.
    pub max_body_bytes: Option<u64>,
}

impl Frontend {
    /// Checks what the spec's balancer fields allow together.
    pub fn validate(&self) -> Result<(), SpecError> {
        match self.max_body_bytes {
            Some(0) => Err(invalid("max_body_bytes", "must be at least 1 (leave it out for no cap)".into())),
            Some(n) if n > limits::BODY_BYTES_MAX => Err(invalid(
                "max_body_bytes",
                format!("{n} bytes is more than the limit of {} (leave it out for no cap)", limits::BODY_BYTES_MAX),
            )),
            Some(_) if self.protocol == Protocol::Tcp => Err(invalid(
                "max_body_bytes",
                "applies to HTTP requests; an app with protocol = \"tcp\" passes bytes through uncounted".into(),
            )),
            _ => Ok(()),
        }
    }
}
