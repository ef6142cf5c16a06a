//! Subcommands. Each is thin: arguments → one call into `settlement` → printed result.

use std::path::PathBuf;

use anyhow::Context as _;
use settlement::config::Config;
use settlement::features::BreakEvent;
use settlement::store::Store;

pub mod bench;
pub mod dead_letter;
pub mod demo;
pub mod eval;
pub mod features;
pub mod ingest;
pub mod reconcile;
pub mod settle;
pub mod simulate;
pub mod train;
pub mod verify;

pub struct Context {
    pub config_path: PathBuf,
    pub database_url: Option<String>,
}

impl Context {
    /// The configuration file; a missing file is an error only for commands that need
    /// providers (`require_providers`), the others run on the defaults.
    pub fn config(&self, require_providers: bool) -> anyhow::Result<Config> {
        if !self.config_path.exists() && !require_providers {
            return Ok(Config::parse("")?);
        }
        Config::load(&self.config_path).with_context(|| "loading the configuration (--config)")
    }

    pub async fn store(&self, config: &Config) -> anyhow::Result<Store> {
        let url = self.database_url.clone().unwrap_or_else(|| config.store.url.clone());
        Store::open(&url).await.with_context(|| format!("opening the store at {}", redact(&url)))
    }
}

/// The reconciliation break events that training replays among the stored transactions
/// (`train --data <store>` and `features export`): every recorded opening and settling,
/// in the order the store recorded them.
pub async fn break_events(store: &Store) -> anyhow::Result<Vec<BreakEvent>> {
    let changes = store.break_events().await?;
    Ok(settlement::features::break_events_from_changes(changes.iter().map(|change| {
        settlement::features::BreakStatusChange {
            break_id: change.break_id,
            provider: &change.provider,
            at: change.at,
            opened: change.opened,
        }
    })))
}

/// A URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let credentials = &url[scheme_end + 3..at];
            match credentials.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme_end + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_redacted() {
        assert_eq!(super::redact("postgres://u:secret@host/db"), "postgres://u:***@host/db");
        assert_eq!(super::redact("postgres://u@host/db"), "postgres://u@host/db");
        assert_eq!(super::redact("sqlite:x.db"), "sqlite:x.db");
    }
}
