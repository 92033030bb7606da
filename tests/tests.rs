//! safetally's integration tests: one binary, one module per area, each
//! test in its own temporary directory.

mod cli;
mod damage;
mod disclosure;
mod disk;
mod faults;
mod fuzz;
mod leak;
mod linkage;
mod normalisation;
mod properties;
mod report;
mod store;
mod synth;
mod util;
