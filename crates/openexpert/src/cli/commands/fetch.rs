//! `openexpert fetch [NAME...]`: download and verify default assets.

use clap::Args;
use lm_core::assets::{FetchOptions, fetch};

/// Arguments of `fetch`.
#[derive(Debug, Args)]
pub struct FetchArgs {
    /// Asset names from assets/manifest.toml (default: the default set).
    pub names: Vec<String>,
    /// No progress output.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs `fetch`.
pub fn run(args: FetchArgs) -> anyhow::Result<()> {
    let options = FetchOptions {
        quiet: args.quiet,
        ..FetchOptions::default()
    };
    let reports = fetch(&args.names, &options)?;
    for r in reports {
        eprintln!("{r}");
    }
    Ok(())
}
