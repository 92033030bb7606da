//! The report's configuration (`report --config FILE`, TOML): read and
//! checked here, apart from the report itself, so that what reads outside
//! text builds (and is fuzzed) without the query engine.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};

/// Memory for fuzzy linkage's encodings by default, in MiB.
pub const DEFAULT_FUZZY_MEMORY_MIB: u64 = 512;

/// The report's settings (`--config FILE`, TOML); every field optional.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// The report's title.
    pub title: String,
    /// Smallest count published, other than zero (default 5).
    pub min_count: u64,
    /// Smallest denominator of a published percentage (default 20).
    pub min_denominator: u64,
    /// Publish zero counts (default true).
    pub publish_zeros: bool,
    /// How wide the range a reader can still believe for a suppressed
    /// count must be (default: min_count).
    pub protection: Option<u64>,
    /// A folder of extra `.sql` figures (relative to the config file).
    pub queries: Option<PathBuf>,
    /// Round every published count to a multiple of this base (for
    /// instance 5); percentages are then of the rounded counts.
    pub rounding_base: Option<u64>,
    /// Link records by the similarity of their encodings as well as by
    /// exact keys (docs/linkage.md, "Links that survive typos"); on by
    /// default. `false`: exact keys alone, and no model is fitted.
    pub fuzzy_linkage: bool,
    /// Memory for the encodings fuzzy linkage compares, in MiB (default
    /// 512): a form whose records' encodings need more is compared one
    /// range of records against another, reading each range from the drops
    /// again (slower, the same links; docs/linkage.md, "Memory").
    pub fuzzy_memory_mib: u64,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            title: "Anti-trafficking task force: screening and self-assessment figures".into(),
            min_count: 5,
            min_denominator: 20,
            publish_zeros: true,
            protection: None,
            queries: None,
            rounding_base: None,
            fuzzy_linkage: true,
            fuzzy_memory_mib: DEFAULT_FUZZY_MEMORY_MIB,
        }
    }
}

impl Config {
    /// Reads a config file; relative paths in it are taken from its folder.
    pub fn read(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format!("cannot read {}", path.display()), e))?;
        Config::parse(&text, path)
    }

    /// Reads a config file's text (`path` for messages and relative paths).
    pub fn parse(text: &str, path: &Path) -> Result<Config> {
        let mut c: Config = toml::from_str(text).map_err(|e| {
            Error::Usage(format!(
                "{} is not a report configuration: {}",
                path.display(),
                e.message().trim()
            ))
        })?;
        if c.min_count < 1 {
            return Err(Error::Usage(format!(
                "{}: min_count must be at least 1",
                path.display()
            )));
        }
        if c.protection == Some(0) {
            return Err(Error::Usage(format!(
                "{}: protection must be at least 1 (or left out: min_count)",
                path.display()
            )));
        }
        if !(16..=1 << 30).contains(&c.fuzzy_memory_mib) {
            return Err(Error::Usage(format!(
                "{}: fuzzy_memory_mib must be at least 16 (MiB; the default is {})",
                path.display(),
                DEFAULT_FUZZY_MEMORY_MIB
            )));
        }
        if c.rounding_base.is_some_and(|b| b < 2) {
            return Err(Error::Usage(format!(
                "{}: rounding_base must be at least 2 (or left out)",
                path.display()
            )));
        }
        if let Some(q) = &c.queries
            && q.is_relative()
        {
            c.queries = Some(path.parent().unwrap_or(Path::new(".")).join(q));
        }
        Ok(c)
    }
}
