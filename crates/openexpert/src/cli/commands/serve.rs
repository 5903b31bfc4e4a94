//! `openexpert serve`: an OpenAI-compatible HTTP server for a model (with `--adapter` or
//! `--moe`), batching concurrent requests; the library side is [`openexpert::serve`].

use std::sync::LazyLock;

use anyhow::Context;
use clap::Args;
use lm_core::device::device_from_name;
use openexpert::serve::{ServeConfig, Server};

use crate::cli::args::adapters::AdapterArgs;
use crate::cli::args::model::{ModelArgs, PrecisionArgs, WeightsArgs};

static DEFAULTS: LazyLock<ServeConfig> = LazyLock::new(ServeConfig::default);

/// Arguments of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// The decoder served (it needs a chat template).
    #[command(flatten)]
    pub model: ModelArgs,
    /// Precision of the decoder's frozen weights and activations.
    #[command(flatten)]
    pub precision: PrecisionArgs,
    /// PEFT adapters applied to it, or a mixture.
    #[command(flatten)]
    pub adapter: AdapterArgs,
    /// Weights decoding multiplies by.
    #[command(flatten)]
    pub weights: WeightsArgs,
    /// The name clients pass as `model` (default: the --model value).
    #[arg(long, value_name = "NAME")]
    pub served_model_name: Option<String>,
    /// Host or address to listen on (0.0.0.0 for every interface: the server has no
    /// authentication).
    #[arg(long, default_value_t = DEFAULTS.host.clone())]
    pub host: String,
    /// Port to listen on (0 = any free one; the address is printed on stderr).
    #[arg(long, default_value_t = DEFAULTS.port)]
    pub port: u16,
    /// Most requests generated together in one batch.
    #[arg(long, default_value_t = DEFAULTS.max_batch)]
    pub max_batch: usize,
    /// Milliseconds to wait for more requests before a batch starts.
    #[arg(long, default_value_t = DEFAULTS.batch_window_ms)]
    pub batch_window_ms: u64,
    /// Most requests waiting; more are answered 503 with Retry-After.
    #[arg(long, default_value_t = DEFAULTS.max_queue)]
    pub max_queue: usize,
    /// max_tokens of a request that gives none (clamped to the context left).
    #[arg(long, default_value_t = DEFAULTS.default_max_tokens)]
    pub default_max_tokens: usize,
}

impl ServeArgs {
    /// The server's settings from the flags.
    pub fn config(&self) -> ServeConfig {
        ServeConfig {
            model_name: self
                .served_model_name
                .clone()
                .unwrap_or_else(|| self.model.model.clone()),
            host: self.host.clone(),
            port: self.port,
            max_batch: self.max_batch,
            batch_window_ms: self.batch_window_ms,
            max_queue: self.max_queue,
            default_max_tokens: self.default_max_tokens,
            stop_on_ctrl_c: true,
        }
    }
}

/// Runs `serve` until Ctrl-C.
pub fn run(args: ServeArgs, device: &str) -> anyhow::Result<()> {
    let config = args.config();
    let device = device_from_name(device)?;
    let mut model = args.precision.load(&args.model.model, &device)?;
    args.weights.apply(&mut model)?;
    let mix = args.adapter.apply(&mut model)?;
    let label = args.adapter.label()?;
    let server = Server::start(model, mix, config).context("starting the server")?;
    eprintln!(
        "openexpert serve: {} ({label}, {}) on {} (POST /chat/completions, GET /models); Ctrl-C to stop",
        server.model_name(),
        args.precision.precision,
        server.base_url()
    );
    server.wait()?;
    eprintln!("openexpert serve: stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::cli::{Cli, Command};

    #[test]
    fn flags_parse_and_default_to_the_library() {
        let cli = Cli::try_parse_from(["openexpert", "serve", "--port", "0", "--max-batch", "4"])
            .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("expected serve")
        };
        let c = a.config();
        let lib = openexpert::serve::ServeConfig::default();
        assert_eq!((c.port, c.max_batch), (0, 4));
        assert_eq!(c.model_name, lm_core::assets::DEFAULT_MODEL);
        assert_eq!(
            (c.host.as_str(), c.batch_window_ms, c.max_queue),
            (lib.host.as_str(), lib.batch_window_ms, lib.max_queue)
        );
        assert!(c.stop_on_ctrl_c);
        let cli = Cli::try_parse_from([
            "openexpert",
            "serve",
            "--model",
            "m.gguf",
            "--served-model-name",
            "teacher",
        ])
        .unwrap();
        let Command::Serve(a) = cli.command else {
            panic!("expected serve")
        };
        assert_eq!(a.config().model_name, "teacher");
        assert!(
            Cli::try_parse_from(["openexpert", "serve", "--adapter", "a", "--moe", "m"]).is_err(),
            "--adapter and --moe exclude each other"
        );
    }
}
