//! Pure types and rules of Voronka: no I/O, no async, no SQL.
//! Everything that arrives from outside is parsed into these types at the edge.

pub mod assign;
pub mod clock;
pub mod contact;
pub mod errors;
pub mod lead;
pub mod schedule;
pub mod scoring;
pub mod status;
pub mod webhook;
pub mod workflow;

pub use clock::{Clock, SystemClock, TestClock};
pub use contact::{Email, Messenger, Phone, PhoneRegion};
pub use errors::{FieldErrors, Lang};
pub use lead::{Consent, LeadInput, NewLead, Utm};
pub use status::{Grade, LeadStatus, Temperature};
