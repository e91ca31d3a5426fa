//! The `flotilla` command.

use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

#[derive(Parser)]
#[command(
    name = "flotilla",
    version,
    about = "Flotilla: an actor cluster runtime for Rust"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the demo: a supervised actor pipeline that crashes, restarts and shuts down cleanly.
    Demo {
        /// Milliseconds between input lines.
        #[arg(long, default_value_t = 150)]
        pace_ms: u64,
        /// Keep running after the pipeline is done, until SIGTERM or Ctrl-C.
        #[arg(long)]
        hold: bool,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn")),
        )
        .compact()
        .with_target(false)
        .without_time()
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    // A panic inside an actor is a failure its supervisor handles and logs; one line is enough.
    std::panic::set_hook(Box::new(|info| {
        let location = info.location().map(ToString::to_string).unwrap_or_default();
        tracing::debug!(%location, "panic: {info}");
    }));
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    match cli.command {
        Command::Demo { pace_ms, hold } => {
            let options = flotilla::demo::DemoOptions {
                pace: Duration::from_millis(pace_ms),
                hold,
                ..Default::default()
            };
            let summary = runtime
                .block_on(flotilla::demo::run(
                    options,
                    flotilla::demo::Narrator::printing(),
                ))
                .context("the demo failed")?;
            println!(
                "summary: {} numbers summed to {}; the parser ran as {} incarnations; {} dead letter(s)",
                summary.numbers, summary.total, summary.parser_incarnations, summary.dead_letters
            );
        }
    }
    Ok(())
}
