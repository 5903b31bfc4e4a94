//! The `lora` subcommands as a stand-alone binary (the `openexpert` CLI mounts the same ones):
//! `cargo run --release -p lora-zoo --example lora -- inspect DIR`,
//! `... -- combine --method ties --adapters A,B --weights 0.5,0.5 --rank 8 --output OUT`,
//! `... -- similarity --bank DIR --mode delta --output S.json`,
//! `... -- merge --model M --adapter A --output OUT`, `... -- export --model M --output OUT`.

use clap::Parser;
use lora_zoo::cli::{LoraCommand, run};

/// lora-zoo command line.
#[derive(Parser)]
struct Args {
    #[command(subcommand)]
    cmd: LoraCommand,
}

fn main() {
    let args = Args::parse();
    if let Err(e) = run(args.cmd) {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
