//! safetally: pseudonymised case records from anti-trafficking task-force
//! members, merged, linked and published with small counts suppressed.
//!
//! The modules follow the data's flow (DESIGN.md): raw records in
//! ([`raw`]), pseudonymise ([`pseudonymise`], under a [`key`]), drops
//! ([`drop`]), and the synthetic data that demonstrates it ([`synth`]) or
//! loads it at any size ([`workload`]).

pub mod audit;
pub mod config;
pub mod cubes;
pub mod demo;
pub mod digest;
pub mod drop;
pub mod error;
pub mod fuzz;
pub mod guard;
pub mod interval;
pub mod key;
pub mod pseudonymise;
pub mod raw;
#[cfg(feature = "secretariat")]
pub mod report;
pub mod schema;
pub mod store;
pub mod synth;
pub mod template;
pub mod workload;

pub use error::{Error, Result};
